"""One list of keys per config block: the dataclass fields, the shipped YAML and the docs' key tables agree.

For every typed block of the plugin (``policy_loss.espo``, ``policy_loss.egspo``, ``policy_loss.hybrid``,
``data.expert``) the dataclass is the definition; the ``*_algo.yaml`` that ships the block must list every field
with the dataclass default, the docs' key table must list every field with that default, and no YAML under
``verl_espo/config/`` or ``recipes/`` may set a key the dataclass does not have. Adding, renaming or re-defaulting
a key in one place only fails here, naming the place and the key.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from verl_espo.config import EGSPOConfig, ESPOConfig, HybridConfig, PluginPolicyLossConfig
from verl_espo.trainer.expert_data import ExpertDataConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "verl_espo" / "config"
POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"

#: (dataclass, dotted key of its block, the YAML that ships it, the doc, the line that opens its key table)
BLOCKS = [
    (ESPOConfig, f"{POLICY_LOSS}.espo", "espo_algo.yaml", "docs/espo.md", "## Configuration keys"),
    (EGSPOConfig, f"{POLICY_LOSS}.egspo", "egspo_algo.yaml", "docs/egspo.md", f"`{POLICY_LOSS}.egspo`"),
    (HybridConfig, f"{POLICY_LOSS}.hybrid", "egspo_algo.yaml", "docs/egspo.md", f"`{POLICY_LOSS}.hybrid`"),
    (ExpertDataConfig, "data.expert", "egspo_algo.yaml", "docs/egspo.md", "| `data.expert` key |"),
]
IDS = [block[1] for block in BLOCKS]


def config_fields(cls: type) -> dict[str, Any]:
    """The block's keys and their defaults (``_target_`` is Hydra's, not a setting)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "_target_":
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def doc_table(doc: str, opener: str) -> dict[str, Any]:
    """The first key table (``| key | default | meaning |``) at or after the line containing ``opener``: each key
    with its default. A row may name several keys with as many defaults (``| `a`, `b` | `0`, `1` | ...``)."""
    lines = (ROOT / doc).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if opener in line), None)
    assert start is not None, f"{doc}: no line containing {opener!r} (the key table's heading)"
    rows = []
    for line in lines[start:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    assert len(rows) > 2, f"{doc}: no key table after {opener!r}"
    table: dict[str, Any] = {}
    for row in rows[2:]:  # after the header and the |---| line
        cells = [c.strip() for c in row.strip("|").split("|")]
        keys, defaults = re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1])
        assert len(keys) == len(defaults), f"{doc}: row {row!r} names {len(keys)} keys but {len(defaults)} defaults"
        table.update({k: yaml.safe_load(v) for k, v in zip(keys, defaults)})
    return table


def shipped_yamls() -> list[Path]:
    return sorted([*CONFIG_DIR.rglob("*.yaml"), *(ROOT / "recipes").rglob("*.yaml")])


@pytest.mark.parametrize("cls,key,yaml_file,doc,opener", BLOCKS, ids=IDS)
def test_shipped_yaml_lists_every_field_with_its_default(cls, key, yaml_file, doc, opener):
    block = select(yaml.safe_load((CONFIG_DIR / yaml_file).read_text()), key)
    assert isinstance(block, dict), f"verl_espo/config/{yaml_file} has no {key} block"
    block = {k: v for k, v in block.items() if k != "_target_"}
    fields = config_fields(cls)
    assert sorted(block) == sorted(fields), (
        f"verl_espo/config/{yaml_file}: {key} lists {sorted(block)}, {cls.__name__} has {sorted(fields)}"
    )
    differ = {k: (block[k], fields[k]) for k in fields if block[k] != fields[k]}
    assert not differ, f"verl_espo/config/{yaml_file}: {key} defaults (yaml, dataclass) differ: {differ}"


@pytest.mark.parametrize("cls,key,yaml_file,doc,opener", BLOCKS, ids=IDS)
def test_docs_key_table_lists_every_field_with_its_default(cls, key, yaml_file, doc, opener):
    table = doc_table(doc, opener)
    fields = config_fields(cls)
    assert sorted(table) == sorted(fields), f"{doc}: the {key} table lists {sorted(table)}, {cls.__name__} has " + str(
        sorted(fields)
    )
    differ = {k: (table[k], fields[k]) for k in fields if table[k] != fields[k]}
    assert not differ, f"{doc}: {key} defaults (docs, dataclass) differ: {differ}"


@pytest.mark.parametrize("cls,key,yaml_file,doc,opener", BLOCKS, ids=IDS)
def test_no_shipped_yaml_sets_an_unknown_key(cls, key, yaml_file, doc, opener):
    fields = set(config_fields(cls)) | {"_target_"}
    unknown = []
    for path in shipped_yamls():
        block = select(yaml.safe_load(path.read_text()), key)
        if isinstance(block, dict):
            unknown += [f"{path.relative_to(ROOT)}: {key}.{k}" for k in sorted(set(block) - fields)]
    assert not unknown, f"keys {cls.__name__} does not have: {unknown}"


def test_policy_loss_blocks_are_fields_of_the_plugin_config():
    """Every key the shipped YAMLs set under ``policy_loss`` is a field of the class they instantiate."""
    fields = {f.name for f in dataclasses.fields(PluginPolicyLossConfig)}
    unknown = []
    for path in shipped_yamls():
        block = select(yaml.safe_load(path.read_text()), POLICY_LOSS)
        if isinstance(block, dict):
            unknown += [f"{path.relative_to(ROOT)}: {POLICY_LOSS}.{k}" for k in sorted(set(block) - fields)]
    assert not unknown, f"keys PluginPolicyLossConfig does not have: {unknown}"


def test_expert_data_reader_accepts_every_field():
    """``data.expert`` is read by ``ExpertDataConfig.from_mapping``, which refuses unknown keys: it knows them all."""
    fields = config_fields(ExpertDataConfig)
    assert dataclasses.asdict(ExpertDataConfig.from_mapping(fields)) == dataclasses.asdict(ExpertDataConfig())
