"""The EGSPO recipe's pairings (recipes/egspo/README.md, "Which pair measures what"): CHORD-phi from stage 1
(``--sft algo=chord_phi``) starts from EGSPO's SFT weights and differs from EGSPO only in the loss's gate."""

from __future__ import annotations

from verl_espo import recipes

EGSPO = "egspo/qwen2.5_7b_instruct"


def _flat(node, prefix=""):
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
    out = {}
    for key, value in container.items():
        path = f"{prefix}{key}"
        out.update(_flat(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def test_chord_phi_from_stage_1_shares_egspos_weights_and_differs_only_in_the_gate(tmp_path):
    egspo = recipes.plan_run(EGSPO, [], data_root="/d", out=tmp_path, sft=True, check=False)
    gate_off = recipes.plan_run(EGSPO, ["algo=chord_phi"], data_root="/d", out=tmp_path, sft=True, check=False)
    paper = recipes.plan_run(EGSPO, ["algo=chord_phi"], data_root="/d", out=tmp_path, check=False)
    assert gate_off.run_dir.name == "qwen2.5_7b_instruct-chord_phi-from-sft"
    assert gate_off.sft_dir == egspo.sft_dir and gate_off.sft_command == egspo.sft_command  # one stage 1, shared
    weights = [a for a in egspo.command if a.startswith("actor_rollout_ref.model.path=")]
    assert weights and weights[0] in gate_off.command and weights[0] not in paper.command

    a = _flat(recipes.compose_recipe(EGSPO, ["recipe.data_root=/d"]))
    b = _flat(recipes.compose_recipe(EGSPO, ["recipe.data_root=/d", "algo=chord_phi"]))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ == {"recipe.method", "actor_rollout_ref.actor.policy_loss.loss_mode"}, differ
    assert (a["actor_rollout_ref.actor.policy_loss.loss_mode"], b["actor_rollout_ref.actor.policy_loss.loss_mode"]) == (
        "egspo",
        "chord",
    )
