"""One list of keys per config block: the dataclass fields, the shipped YAML and the docs' key tables agree.

The blocks are derived from the declared losses: every ``config_blocks`` entry of a loss's ``LossSpec`` is a field
of :class:`PluginPolicyLossConfig` whose dataclass is the definition; the one YAML under ``verl_espo/config/`` that
sets the block must list every field with the dataclass default, and ``docs/<loss>.md`` of every loss that reads
the block must hold a key table (the first table after the line naming `` `<dotted block key>` ``) listing every
field with that default. No YAML under ``verl_espo/config/`` or ``recipes/`` may set a key the dataclass does not
have. Adding, renaming or re-defaulting a key in one place only fails here, naming the place and the key; a new
loss's block is checked with no edit here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from verl.workers.config import PolicyLossConfig

from verl_espo.config import PluginPolicyLossConfig
from verl_espo.loss_inputs import loss_specs
from verl_espo.trainer.expert_data import ExpertDataConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "verl_espo" / "config"
POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"

#: Losses documented in another loss's doc (CHORD shares EGSPO's hybrid block and its doc).
SHARED_DOCS = {"chord": "docs/egspo.md"}
#: Blocks outside ``policy_loss``: (dataclass, dotted key, the YAML that ships it, the doc, its key table's opener).
OTHER_BLOCKS = [(ExpertDataConfig, "data.expert", "egspo_algo.yaml", "docs/egspo.md", "| `data.expert` key |")]


def select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def block_classes() -> dict[str, type]:
    """The settings blocks :class:`PluginPolicyLossConfig` adds to veRL's ``PolicyLossConfig``: name -> dataclass."""
    verls = {f.name for f in dataclasses.fields(PolicyLossConfig)}
    return {
        f.name: f.default_factory
        for f in dataclasses.fields(PluginPolicyLossConfig)
        if f.name not in verls and isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory)
    }


def shipping_yaml(key: str) -> str:
    """The one YAML under ``verl_espo/config/`` that sets the block ``key`` (its file name)."""
    setters = [p.name for p in sorted(CONFIG_DIR.glob("*.yaml")) if select(yaml.safe_load(p.read_text()), key)]
    assert len(setters) == 1, f"{key}: set by {setters or 'no YAML'} under verl_espo/config/, expected exactly one"
    return setters[0]


def policy_loss_blocks() -> list[tuple[type, str, str, str, str]]:
    """``(dataclass, dotted key, shipping YAML, doc, opener)`` for every block a declared loss reads, once per doc."""
    classes = block_classes()
    docs: dict[str, set[str]] = {}
    for spec in loss_specs().values():
        for block in spec.config_blocks:
            assert block in classes, f"loss {spec.name!r} reads block {block!r}, not a PluginPolicyLossConfig block"
            docs.setdefault(block, set()).add(SHARED_DOCS.get(spec.name, f"docs/{spec.name}.md"))
    rows = []
    for block in sorted(docs):
        key = f"{POLICY_LOSS}.{block}"
        rows += [(classes[block], key, shipping_yaml(key), doc, f"`{key}`") for doc in sorted(docs[block])]
    return rows


BLOCKS = [*policy_loss_blocks(), *OTHER_BLOCKS]
IDS = [f"{block[1]}-{block[3]}" for block in BLOCKS]


def test_every_plugin_block_is_read_by_a_declared_loss():
    """A block no loss declares would escape the checks below."""
    checked = {key for _, key, *_ in BLOCKS}
    unread = sorted(f"{POLICY_LOSS}.{b}" for b in block_classes() if f"{POLICY_LOSS}.{b}" not in checked)
    assert not unread, f"PluginPolicyLossConfig blocks no LossSpec.config_blocks names: {unread}"


def config_fields(cls: type) -> dict[str, Any]:
    """The block's keys and their defaults (``_target_`` is Hydra's, not a setting)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "_target_":
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


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
