"""Pins on every veRL internal the plugin relies on: one test per row of ``docs/verl_internals.md``.

A veRL release that moves one of them fails here, naming the row and what changed, instead of deep inside a
training run. The tests check that each symbol exists with the signature, fields or call the plugin uses (by
introspection, and by reading veRL's source where the reliance is on how veRL calls the plugin); behaviour is
covered by the integration and end-to-end tests.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

import pytest
import verl  # noqa: F401  loads the plugin, as in every veRL process

DOC = "docs/verl_internals.md"


def row(n: int, what: str) -> str:
    return f"veRL internal #{n} of {DOC} changed: {what}"


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]


def source(obj) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def call_keywords(fn, callee: str) -> set[str]:
    """Keyword names of every call to ``callee`` (a plain name) inside ``fn``'s source."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source(fn))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == callee:
            names.update(k.arg for k in node.keywords if k.arg is not None)
    return names


# ----------------------------------------------------------------------------- the hf rollout backend
def test_01_rollout_class_registry_maps_name_and_mode_to_an_adapter_path():
    from verl.workers.rollout import base

    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    assert isinstance(registry, dict), row(1, "verl.workers.rollout.base._ROLLOUT_REGISTRY is gone or not a dict")
    assert all(isinstance(k, tuple) and len(k) == 2 and isinstance(v, str) for k, v in registry.items()), row(
        1, f"_ROLLOUT_REGISTRY no longer maps (name, mode) to a class path: {registry!r}"
    )
    assert params(base.get_rollout_class)[:2] == ["rollout_name", "mode"], row(1, "get_rollout_class's signature")
    from verl_espo.rollout.hf_adapter import ServerAdapter

    assert base.get_rollout_class("hf", "async") is ServerAdapter, row(1, "get_rollout_class does not read the dict")


def test_02_replica_fields_the_hf_replica_uses():
    from verl.workers.config import RolloutConfig
    from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry

    from verl_espo.rollout.hf_replica import HFReplica

    assert RolloutReplicaRegistry.get("hf") is HFReplica, row(
        2, "RolloutReplicaRegistry.get no longer calls the loader"
    )
    assert params(RolloutReplica.__init__)[:3] == ["replica_rank", "config", "model_config"], row(
        2, f"RolloutReplica.__init__ takes {params(RolloutReplica.__init__)}"
    )
    replica = HFReplica(replica_rank=0, config=RolloutConfig(name="hf"), model_config=None, gpus_per_node=1)
    fields = {
        "workers", "world_size", "gpus_per_replica_node", "nnodes", "replica_rank", "config", "model_config",
        "rollout_mode", "servers", "is_reward_model", "is_teacher_model", "name_suffix",
        "_server_handle", "_server_address",
    }  # fmt: skip
    missing = fields - set(vars(replica))
    assert not missing, row(2, f"RolloutReplica no longer sets {sorted(missing)}")
    assert isinstance(replica.max_concurrency, int), row(2, "RolloutReplica.max_concurrency")
    replica._server_handle, replica._server_address = "handle", "address"
    assert (replica.server_handle, replica.server_address) == ("handle", "address"), row(
        2, "server_handle / server_address no longer read _server_handle / _server_address"
    )


def test_03_server_methods_verl_calls_exist_on_the_hf_server():
    from verl.workers.rollout import llm_server, replica

    from verl_espo.rollout.hf_server import HFRolloutServer

    called = set()
    for module in (replica, llm_server):
        called |= set(re.findall(r"\bserver\.(\w+)\.remote\(", inspect.getsource(module)))
    assert {"generate", "wake_up", "sleep"} <= called, row(3, f"veRL's server calls moved; found only {called}")
    missing = sorted(m for m in called if not callable(getattr(HFRolloutServer, m, None)))
    assert not missing, row(3, f"veRL now calls {missing} on a rollout server; add them to HFRolloutServer")

    generate_kwargs: set[str] = set()  # keywords of `server.generate.remote(...)`
    for node in ast.walk(ast.parse(inspect.getsource(llm_server))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "remote":
            inner = node.func.value
            if isinstance(inner, ast.Attribute) and inner.attr == "generate":
                generate_kwargs |= {k.arg for k in node.keywords if k.arg is not None}
    accepted = inspect.signature(HFRolloutServer.generate).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in generate_kwargs if k not in accepted)
    assert takes_kwargs and not unknown, row(3, f"generate is called with {unknown}")
    assert "reject_request" in inspect.signature(HFRolloutServer.abort_all_requests).parameters

    from verl.workers.rollout.replica import TokenOutput

    token_fields = set(TokenOutput.model_fields)
    assert {"token_ids", "log_probs", "stop_reason", "extra_fields"} <= token_fields, row(
        3, f"TokenOutput fields: {sorted(token_fields)}"
    )


def test_04_rollout_adapter_contract():
    from verl.workers import engine_workers
    from verl.workers.rollout.base import BaseRollout
    from verl.workers.rollout.utils import ensure_async_iterator

    from verl_espo.rollout.hf_adapter import ServerAdapter

    assert params(BaseRollout.__init__)[:3] == ["config", "model_config", "device_mesh"], row(4, "BaseRollout.__init__")
    assert not inspect.isabstract(ServerAdapter), row(
        4, f"BaseRollout gained abstract methods: {sorted(ServerAdapter.__abstractmethods__)}"
    )
    assert "wire_format" in params(BaseRollout.update_weights), row(4, "BaseRollout.update_weights lost wire_format")
    keywords = call_keywords(engine_workers.ActorRolloutRefWorker.init_model, "rollout_cls")
    assert keywords == {"config", "model_config", "device_mesh"}, row(4, f"the adapter is built with {keywords}")
    assert inspect.isfunction(ensure_async_iterator), row(4, "verl.workers.rollout.utils.ensure_async_iterator")


# ----------------------------------------------------------------------------- the cpu platform
def test_05_process_group_setup_functions():
    from verl.utils import distributed
    from verl.workers import engine_workers

    assert params(distributed.initialize_global_process_group_ray) == ["timeout_second", "backend"], row(
        5, "initialize_global_process_group_ray's signature"
    )
    assert params(distributed.initialize_global_process_group) == ["timeout_second"], row(
        5, "initialize_global_process_group's signature"
    )
    assert callable(getattr(engine_workers, "initialize_global_process_group_ray", None)), row(
        5, "engine_workers no longer binds initialize_global_process_group_ray by name"
    )
    assert re.search(
        r"initialize_global_process_group_ray\(timeout_second=None\)", inspect.getsource(engine_workers)
    ), row(5, "the actor worker calls initialize_global_process_group_ray differently")


def test_06_fsdp_engine_registration():
    from verl.workers.engine.base import BaseEngine, EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    assert params(EngineRegistry.register)[:3] == ["model_type", "backend", "device"], row(6, "EngineRegistry.register")
    assert issubclass(FSDPEngineWithLMHead, BaseEngine) and issubclass(FSDPEngineWithValueHead, BaseEngine)

    class _Probe(BaseEngine):
        pass

    key = "verl_espo_internals_probe"
    try:
        EngineRegistry.register(model_type=key, backend="fsdp", device="cpu")(_Probe)
        with pytest.raises(AssertionError):  # the plugin treats this as "already registered"
            EngineRegistry.register(model_type=key, backend="fsdp", device="cpu")(_Probe)
    finally:
        EngineRegistry._engines.pop(key, None)


def test_07_platform_registry_and_selection(monkeypatch):
    from verl.plugin.platform import PlatformRegistry, platform_manager

    from verl_espo.platform.cpu import PlatformCPU

    assert PlatformRegistry.get("cpu") is PlatformCPU, row(7, "PlatformRegistry.register / get")
    assert not inspect.isabstract(PlatformCPU), row(
        7, f"PlatformBase gained abstract methods: {sorted(PlatformCPU.__abstractmethods__)}"
    )
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert platform_manager._detect_platform_name() == "cpu", row(7, "VERL_PLATFORM no longer selects the platform")


# ----------------------------------------------------------------------------- the trainer
def extended_verl_trainers() -> set[type]:
    """The veRL trainer classes the plugin's registered trainers extend."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    return {
        base
        for cls in TRAINER_REGISTRY.values()
        if cls.__module__.startswith("verl_espo.")
        for base in cls.__mro__[1:]
        if base.__module__.startswith("verl.") and base in TRAINER_REGISTRY.values()
    }


def test_08_trainer_mode_is_a_plain_attribute_compared_with_sync():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert not isinstance(inspect.getattr_static(PPOTrainer, "trainer_mode", None), property), row(
        8, "PPOTrainer.trainer_mode became a property"
    )
    assert "self.trainer_mode = self.config.trainer.v1.trainer_mode" in inspect.getsource(PPOTrainer.__init__), row(
        8, "PPOTrainer.__init__ no longer sets trainer_mode from trainer.v1.trainer_mode"
    )
    assert re.search(r'self\.trainer_mode\s*[!=]=\s*"sync"', inspect.getsource(PPOTrainer)), row(
        8, 'PPOTrainer no longer compares trainer_mode with "sync"; the plugin trainer\'s override may be obsolete'
    )
    assert "self.config.trainer.v1.get(self.trainer_mode, {})" in inspect.getsource(PPOTrainer.__init__), row(
        8, "PPOTrainer no longer reads the mode's settings from trainer.v1.<trainer_mode>"
    )
    # Each plugin trainer behaves as the veRL mode it extends: that mode must still name that veRL class.
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    plugin_trainers = {n: c for n, c in TRAINER_REGISTRY.items() if c.__module__.startswith("verl_espo.")}
    assert plugin_trainers, "the plugin registered no trainer"
    for name, cls in plugin_trainers.items():
        mode = getattr(cls, "base_trainer_mode", "sync")
        base = TRAINER_REGISTRY.get(mode)
        assert base is not None and base in cls.__mro__, row(8, f"{name}: veRL's {mode!r} trainer is now {base}")


def test_09_update_actor_hook_and_extra_info_path():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils import transferqueue_utils

    assert params(PPOTrainer._update_actor) == ["batch", "metrics"], row(9, "PPOTrainer._update_actor's signature")
    for base in extended_verl_trainers():  # the async trainers may override the hooks the plugin overrides
        for hook in ("_update_actor", "_compute_old_log_prob", "_balance_batch"):
            assert params(getattr(base, hook)) == params(getattr(PPOTrainer, hook)), row(9, f"{base.__name__}.{hook}")
    body = inspect.getsource(PPOTrainer._update_actor)
    assert "batch.extra_info.update(" in body and "self.actor_rollout_wg.update_actor(batch)" in body, row(
        9, "_update_actor no longer sends batch.extra_info to the actor workers"
    )
    assert "self._update_actor(batch, metrics=metrics)" in inspect.getsource(PPOTrainer), row(
        9, "the training step no longer calls self._update_actor(batch, metrics=metrics)"
    )
    assert "meta.extra_info" in inspect.getsource(transferqueue_utils._async_meta_to_realdata), row(
        9, "extra_info no longer reaches the workers' TensorDict as non-tensor data"
    )


def test_10_old_entropy_field_in_transfer_queue():
    import transfer_queue as tq
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from verl_espo.workers.actor_loss import OLD_ENTROPY_KEY

    body = inspect.getsource(PPOTrainer._compute_old_log_prob)
    assert f'data["{OLD_ENTROPY_KEY}"] = ' in body and '"calculate_entropy": True' in body, row(
        10, f"the old-log-prob pass no longer writes the old entropy under {OLD_ENTROPY_KEY!r}"
    )
    assert params(PPOTrainer._compute_old_log_prob) == ["batch", "metrics"], row(10, "_compute_old_log_prob")
    assert params(tq.kv_batch_get)[:3] == ["keys", "partition_id", "select_fields"], row(10, "tq.kv_batch_get")
    meta_fields = {f.name for f in dataclasses.fields(KVBatchMeta)}
    assert {"keys", "tags", "partition_id", "fields", "extra_info"} <= meta_fields, row(
        10, f"KVBatchMeta: {meta_fields}"
    )


def test_11_batch_rows_hooks_for_expert_rows():
    import transfer_queue as tq
    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert params(PPOTrainer._balance_batch) == ["batch", "metrics", "logging_prefix", "keep_minibatch"], row(
        11, "PPOTrainer._balance_batch's signature"
    )
    assert params(PPOTrainer._get_required_batch_multiple) == ["dp_size"], row(11, "_get_required_batch_multiple")
    step = inspect.getsource(PPOTrainer)
    order = [step.find(s) for s in ("self._balance_batch(batch", "self._compute_old_log_prob(batch")]
    assert -1 not in order and order == sorted(order), row(11, "the step no longer balances before old log-probs")
    assert params(construct_minimal_padding_template) == ["source_td", "source_tag", "eos_token_id"], row(
        11, "construct_minimal_padding_template's signature"
    )
    assert params(tq.kv_batch_put)[:4] == ["keys", "partition_id", "fields", "tags"], row(11, "tq.kv_batch_put")
    assert 'tag.get("is_padding", False)' in step, row(11, "tags' is_padding no longer excludes rows from metrics")
    writer = inspect.getsource(agent_loop_tq)
    assert 'f"{uid}_{session_id}_{i}"' in writer, row(11, "veRL's row key format {uid}_{session_id}_{index}")
    for key in ("prompt_len", "response_len", "seq_len", "min_global_steps", "max_global_steps"):
        assert f'"{key}"' in writer, row(11, f"veRL's row tags no longer carry {key!r}")
    init = inspect.getsource(PPOTrainer)
    assert "self.tokenizer = " in init and "self.global_steps = " in init, row(11, "trainer.tokenizer / global_steps")


def test_12_update_actor_reads_the_mini_batch_size_at_call_time():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "self.config.actor_rollout_ref.actor.ppo_mini_batch_size" in inspect.getsource(PPOTrainer._update_actor), (
        row(12, "_update_actor no longer reads actor.ppo_mini_batch_size from the config")
    )


# ----------------------------------------------------------------------------- the actor loss
def test_13_ppo_loss_calls_the_policy_loss_and_aggregates_as_the_plugin_assumes():
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.utils.metric import AggregationType, Metric
    from verl.workers.utils import losses

    assert params(losses.ppo_loss) == ["config", "model_output", "data", "dp_group"], row(13, "ppo_loss's signature")
    passed = call_keywords(losses.ppo_loss, "policy_loss_fn")
    assert {"old_log_prob", "log_prob", "advantages", "response_mask", "config"} <= passed, row(
        13, f"ppo_loss calls the policy loss with {sorted(passed)}"
    )
    plugin_losses = {n: f for n, f in POLICY_LOSS_REGISTRY.items() if f.__module__.startswith("verl_espo.")}
    assert plugin_losses, "the plugin registered no policy loss"
    for name, fn in plugin_losses.items():
        unknown = passed - set(inspect.signature(fn).parameters)
        assert not unknown, row(13, f"ppo_loss passes {sorted(unknown)}, which the {name!r} loss does not take")
    body = source(losses.ppo_loss)
    for fragment in (
        'data["dp_size"] > 1',
        'data["batch_num_tokens"] is not None',
        'data["global_batch_size"] is not None',
        "config.loss_scale_factor is not None",
        "Metric.from_dict(pg_metrics, aggregation=AggregationType.MEAN)",
    ):
        assert fragment in body, row(13, f"ppo_loss's metric aggregation rule changed (no `{fragment}`)")
    assert {"MEAN", "MAX", "SUM"} <= set(AggregationType.__members__), row(13, "AggregationType")
    metric = Metric(AggregationType.MAX)
    metric.extend([1.0, 3.0])
    assert metric.aggregation == AggregationType.MAX and list(metric.values) == [1.0, 3.0], row(13, "Metric")


def test_14_the_engine_calls_the_installed_loss_and_the_actor_config_takes_a_model_config():
    from verl.workers.config import ActorConfig
    from verl.workers.engine.fsdp import transformer_impl
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from verl_espo.workers.actor_loss import ActorLossFn

    assert params(ActorRolloutRefWorker.set_loss_fn) == ["loss_fn"], row(14, "ActorRolloutRefWorker.set_loss_fn")
    passed = set()
    for node in ast.walk(ast.parse(inspect.getsource(transformer_impl))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "loss_function":
            passed |= {k.arg for k in node.keywords if k.arg is not None}
    assert passed == {"model_output", "data", "dp_group"}, row(14, f"the engine calls the loss with {passed}")
    assert passed <= set(params(ActorLossFn.__call__)), row(14, "ActorLossFn.__call__ does not take them")
    assert "model_config" in getattr(ActorConfig, "_mutable_fields", ()), row(
        14, "ActorConfig.model_config is no longer settable (the loss reads |V| from model_config.hf_config)"
    )
    assert "actor_config.model_config = model_config" in inspect.getsource(ActorRolloutRefWorker.init_model), row(
        14, "veRL's own worker no longer attaches the model config the same way"
    )


# ----------------------------------------------------------------------------- the smoke runs
def test_15_replay_buffer_options_for_the_custom_sampler():
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    taken = set(params(ReplayBuffer.__init__))
    assert {"poll_interval", "train_batch_size", "gen_batch_size"} <= taken, row(15, f"ReplayBuffer takes {taken}")
    passed = call_keywords(PPOTrainer._build_replay_buffer, "dict")
    assert passed and passed <= taken, row(15, f"veRL passes a custom sampler {sorted(passed)}")
    assert "custom_sampler" in inspect.getsource(PPOTrainer._build_replay_buffer), row(15, "sampler.custom_sampler")


# ----------------------------------------------------------------------------- plugin loading
def test_16_verl_loads_plugins_from_the_entry_point_group():
    from importlib.metadata import entry_points

    init = inspect.getsource(verl)
    assert 'entry_points(group="verl.plugins")' in init, row(16, "veRL no longer loads the verl.plugins group")
    targets = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert targets.get("verl_espo") == "verl_espo._plugin", f"the package's entry point is {targets}"


# ----------------------------------------------------------------------------- separate_async on CPU
def test_17_checkpoint_engine_protocol_the_gloo_engine_follows():
    from verl.checkpoint_engine import base
    from verl.workers import engine_workers

    from verl_espo.checkpoint_engine import GlooCheckpointEngine

    for name in ("prepare", "build_topology", "init_process_group", "finalize", "send_weights", "receive_weights"):
        assert name in base.CheckpointEngine.__abstractmethods__, row(17, f"CheckpointEngine.{name} is not abstract")
    assert not GlooCheckpointEngine.__abstractmethods__, row(17, "the ABC gained methods the gloo engine lacks")
    assert params(base.CheckpointEngine.build_topology) == ["actor_wg_world_size", "rollout_world_size", "metadata"]
    assert params(base.CheckpointEngine.send_weights)[:2] == ["weights", "global_steps"], row(17, "send_weights")
    assert params(base.CheckpointEngine.receive_weights)[:1] == ["global_steps"], row(17, "receive_weights")
    # who gets is_master, and what else the constructors receive
    is_master = r"CheckpointEngineRegistry\.new\(\s*backend, is_master=\(torch\.distributed\.get_rank\(\) == 0\)"
    assert re.search(is_master, source(engine_workers.ActorRolloutRefWorker.init_model)), row(
        17, "the actor workers no longer build the engine with is_master=(rank == 0)"
    )
    receiver = r"CheckpointEngineRegistry\.new\(\s*backend, bucket_size=bucket_size, \*\*engine_kwargs\s*\)"
    assert re.search(receiver, source(base.CheckpointEngineWorker.__init__)), row(
        17, "the rollout-side CheckpointEngineWorker builds the engine differently"
    )
    from verl.workers.rollout.replica import RolloutReplica

    assert "replica_rank=self.replica_rank" in source(RolloutReplica.get_ray_class_with_init_args), row(
        17, "standalone rollout workers no longer get their replica_rank (the hf adapter finds its server by it)"
    )
    # the manager's order: prepare, build_topology (class), init_process_group(**lists), send/receive, finalize
    build = source(base.CheckpointEngineManager.build_process_group)
    order = [build.index(s) for s in ('["prepare"]', "self.backend_cls.build_topology(", '["init_process_group"]')]
    assert order == sorted(order), row(17, "build_process_group's call order changed")
    update = source(base.CheckpointEngineManager.update_weights)
    order = [update.index(s) for s in ("self.build_process_group(rollout)", "rollout.update_weights(", '["finalize"]')]
    assert order == sorted(order), row(17, "update_weights' call order changed")
    assert "sync_metrics.update(result)" in update, row(17, "the senders' returned metrics are no longer merged")
    worker_update = source(base.CheckpointEngineWorker.update_weights)
    assert "self.checkpoint_engine.receive_weights(global_steps=global_steps)" in worker_update, row(17, "receive")
    assert "wire_format=" in worker_update, row(17, "the adapter no longer gets wire_format")
    send = source(engine_workers.ActorRolloutRefWorker.update_weights)
    assert "self.checkpoint_engine.send_weights(per_tensor_param, global_steps=global_steps)" in send, row(17, "send")


def test_18_separate_async_saves_pi_old_through_detach_actor_worker():
    from verl.experimental.separation.engine_workers import DetachActorWorker
    from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
    from verl.utils import fsdp_utils

    swap = source(PPOTrainerSeparateAsync._init_resource_pool_mgr)
    assert "ray.remote(DetachActorWorker)" in swap and "self.role_worker_mapping[" in swap, row(
        18, "the separate-async trainer no longer maps its actor roles to DetachActorWorker"
    )
    for role in ("Role.Actor", "Role.RefPolicy", "Role.ActorRolloutRef", "Role.ActorRollout"):
        assert role in swap, row(18, f"{role} is no longer swapped")
    save = source(DetachActorWorker.save_model_to_cpu)
    assert "self.cpu_saved_models[n] = " in save, row(18, "save_model_to_cpu no longer fills cpu_saved_models[n]")
    assert "self.actor.engine.module" in save, row(18, "save_model_to_cpu no longer saves actor.engine.module")
    assert ".detach().cpu()" in source(fsdp_utils.fsdp2_sharded_save_to_cpu), row(
        18, "fsdp2_sharded_save_to_cpu changed (if it now copies, SnapshotDetachActorWorker can go)"
    )
    old_log_prob = source(PPOTrainerSeparateAsync._compute_old_log_prob)
    assert "save_model_to_cpu(0)" in old_log_prob and "restore_model_from_cpu(0)" in old_log_prob, row(18, "pi_old")


def test_18_snapshot_copies_only_what_aliases_live_weights():
    import torch

    from verl_espo.workers.snapshot_worker import detach_from

    live, other = torch.ones(3), torch.zeros(2)
    saved = ({"w": (live.detach().cpu(), None), "b": (other, None)}, "spec")
    copied = detach_from(saved, {live.untyped_storage().data_ptr()})
    live.add_(1)  # an optimiser step
    assert torch.equal(copied[0]["w"][0], torch.ones(3)) and copied[0]["b"][0] is other and copied[1] == "spec"


def test_19_update_counters_of_the_v1_trainer():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    init, step = source(PPOTrainer.__init__), source(PPOTrainer.step)
    assert "self.parameter_sync_step = " in init and "self.local_trigger_step = 0" in init, row(19, "the counters")
    assert "self.local_trigger_step = trigger_idx" in step and "range(self.parameter_sync_step)" in step, row(
        19, "step() no longer sets local_trigger_step per update"
    )


def test_20_separate_async_setup_logs_through_its_module_logger():
    import logging

    from verl.trainer.ppo.v1 import trainer_separate_async as module

    assert module.logger is logging.getLogger(module.__name__), row(20, "the module logger is no longer the named one")
    setup = source(module.PPOTrainerSeparateAsync._setup)
    assert "logger.info(" in setup, row(20, "_setup no longer logs through logger.info")
    if "flush=True" not in setup:
        pytest.fail(
            row(20, "veRL fixed logger.info(..., flush=True): remove the workaround in PluginTrainerSeparateAsync")
        )


# ----------------------------------------------------------------------------- public hooks
PUBLIC = [
    ("verl.trainer.ppo.core_algos", "register_policy_loss", ["name"]),
    ("verl.trainer.ppo.core_algos", "get_policy_loss_fn", ["name"]),
    ("verl.trainer.ppo.core_algos", "agg_loss", ["loss_mat", "loss_mask", "loss_agg_mode"]),
    ("verl.trainer.ppo.v1", "register_trainer", ["name"]),
    ("verl.trainer.ppo.v1", "get_trainer_cls", ["name"]),
    ("verl.workers.rollout.replica.RolloutReplicaRegistry", "register", ["name", "loader"]),
    ("verl.plugin.platform.PlatformRegistry", "register", ["platform"]),
    ("verl.utils.config", "omega_conf_to_dataclass", ["config", "dataclass_type"]),
    ("verl.utils.tensordict_utils", "get_non_tensor_data", ["data", "key", "default"]),
    ("verl.utils.tensordict_utils", "list_of_dict_to_tensordict", ["list_of_dicts"]),
    ("verl.utils.debug.metrics", "calculate_debug_metrics", ["data"]),
    ("verl.utils.reward_score", "default_compute_score", ["data_source", "solution_str", "ground_truth"]),
    ("verl.utils.device", "get_device_name", []),
    ("verl.utils.device", "get_visible_devices_keyword", []),
    ("verl.utils.device", "get_resource_name", []),
    ("verl.utils.device", "get_torch_device", []),
]


@pytest.mark.parametrize(("owner", "name", "leading"), PUBLIC, ids=[f"{o}.{n}" for o, n, _ in PUBLIC])
def test_public_hooks(owner: str, name: str, leading: list[str]):
    import importlib

    module_name, _, attr = owner.rpartition(".")
    try:
        target = importlib.import_module(owner)
    except ModuleNotFoundError:
        target = getattr(importlib.import_module(module_name), attr)
    fn = getattr(target, name, None)
    assert callable(fn), f"veRL public hook {owner}.{name} is gone ({DOC}, public hooks)"
    assert params(fn)[: len(leading)] == leading, f"{owner}.{name} takes {params(fn)} ({DOC}, public hooks)"


def test_public_classes_and_config_fields():
    from verl.base_config import BaseConfig
    from verl.trainer.ppo.v1 import PPOTrainerSync
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.torch_dtypes import PrecisionType
    from verl.workers.config import ActorConfig, HFModelConfig, PolicyLossConfig, RolloutConfig

    assert issubclass(PPOTrainerSync, PPOTrainer) and callable(PPOTrainer.on_init_end)
    assert dataclasses.is_dataclass(PolicyLossConfig) and issubclass(PolicyLossConfig, BaseConfig)
    assert "loss_mode" in {f.name for f in dataclasses.fields(PolicyLossConfig)}
    actor_fields = {f.name for f in dataclasses.fields(ActorConfig)}
    assert {"policy_loss", "loss_agg_mode", "loss_scale_factor", "global_batch_info", "ppo_mini_batch_size"} <= (
        actor_fields
    ), f"ActorConfig fields ({DOC}, public hooks)"
    rollout_fields = {f.name for f in dataclasses.fields(RolloutConfig)}
    used = {
        "dtype", "load_format", "seed", "max_num_seqs", "free_cache_engine", "prompt_length", "response_length",
        "max_model_len", "tensor_model_parallel_size", "data_parallel_size", "pipeline_model_parallel_size",
        "checkpoint_engine",
    }  # fmt: skip
    assert used <= rollout_fields, f"RolloutConfig lost {sorted(used - rollout_fields)} ({DOC}, public hooks)"
    model_used = {"hf_config", "local_path", "override_config", "tokenizer", "trust_remote_code"}
    model_fields = {f.name for f in dataclasses.fields(HFModelConfig)}
    assert model_used <= model_fields, f"HFModelConfig lost {sorted(model_used - model_fields)}"
    assert callable(PrecisionType.to_dtype)
