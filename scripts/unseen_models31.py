"""Fetch the thirty-first batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch31.md`` sweeps them (``bench_real_models.py --root DIR``).
Three reinforcement-learning control policies of algorithms and observation kinds batch 30's SAC
HalfCheetah actor did not have, all Stable-Baselines3 agents of the RL Zoo as committed in GitHub
``DLR-RM/rl-trained-agents@cd35bde``:

- ``dqn_lunarlander``: a DQN Q-network with **discrete actions** (MLP 8 -> 256 -> 256 -> 4 Q-values,
  ReLU; the greedy action is the argmax) for Box2D LunarLander (``dqn/LunarLander-v2_1``), raw
  observations (positions, velocities, angle, leg contacts; no VecNormalize): [1, 8] -> [1, 4].
- ``tqc_hopper``: a TQC actor, **continuous** (MLP 11 -> 256 -> 256 -> 3, tanh of the mean: the
  deterministic action) for MuJoCo Hopper (``tqc/Hopper-v3_1``), raw observations: [1, 11] ->
  [1, 3] torques in [-1, 1].
- ``ppo_walker2d_vecnorm``: a PPO actor trained **with VecNormalize** and the Zoo's
  ``TimeFeatureWrapper`` (``ppo/Walker2d-v3_1``: MLP 18 -> 64 -> 64 -> 6, tanh activations, the mean
  action clipped to [-1, 1] as SB3's ``predict`` does); the normalisation is **exported into the
  graph** (clip((obs - mean) / sqrt(var + 1e-8), -10, 10) from ``vecnormalize.pkl``, read by a
  restricted unpickler), so the file takes the raw observation plus the time feature
  (1 - t / 1000): [1, 18] -> [1, 6].

``--evaluate`` adds the task metrics: over ``NAME_eval_large.npz`` (every 5th step of two fp32
episodes) the greedy-action agreement (DQN) or mean / largest |action difference|; and, run under
/work/venv-torch (gymnasium 1.4 + box2d / mujoco), the closed-loop return of 10 episodes (seeds
10-19; ``--episodes N`` for more; LunarLander-v3, Hopper-v5, Walker2d-v5: the v2 / v3 envs are
gone from gymnasium 1.x) driven by the file against fp32's, with fp32's own spread between seeds
and the paired change's standard error.

    /work/venv-torch/bin/python scripts/unseen_models31.py [--out DIR] [--only a,b]
    /work/venv-torch/bin/python scripts/unseen_models31.py --evaluate NAME MODEL
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, _savez, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen31"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
RLZOO = ("DLR-RM/rl-trained-agents", "cd35bde610f4045bf2e0731c8f4c88d22df8fc85")
RETURN_SEEDS = tuple(range(10, 20))

# name: (zoo zip, gymnasium env id, obs dim, time feature)
AGENTS: dict[str, tuple[str, str, int, bool]] = {
    "dqn_lunarlander": ("dqn/LunarLander-v2_1/LunarLander-v2.zip", "LunarLander-v3", 8, False),
    "tqc_hopper": ("tqc/Hopper-v3_1/Hopper-v3.zip", "Hopper-v5", 11, False),
    "ppo_walker2d_vecnorm": ("ppo/Walker2d-v3_1/Walker2d-v3.zip", "Walker2d-v5", 18, True),
}
VECNORM_MEMBER = "ppo/Walker2d-v3_1/Walker2d-v3/vecnormalize.pkl"


def _out_dir() -> Path:
    return Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DEFAULT_OUT


def _check(name: str, raw: bytes, check: bool) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    return digest


def read_vecnormalize(raw: bytes) -> dict[str, Any]:
    """``obs_rms.mean`` / ``var``, ``epsilon``, ``clip_obs`` of an SB3 VecNormalize pickle; SB3 / gym
    classes are replaced by plain attribute holders, only numpy / builtins classes are resolved"""

    class Holder:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def __setstate__(self, st: Any) -> None:
            self.__dict__.update(st if isinstance(st, dict) else {"_state": st})

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, cls: str) -> Any:
            if module.split(".")[0] == "numpy" or module in ("collections", "builtins", "copyreg", "_codecs"):
                return super().find_class(module, cls)
            return type(cls, (Holder,), {})

    v = Restricted(io.BytesIO(raw)).load()
    rms = v.obs_rms
    return {"mean": np.asarray(rms.mean, np.float64), "var": np.asarray(rms.var, np.float64),
            "epsilon": float(v.epsilon), "clip_obs": float(v.clip_obs),
            "norm_obs": bool(v.norm_obs)}  # fmt: skip


def export_agent(name: str, out: Path, check: bool) -> None:
    """the zip's ``policy.pth`` as the deterministic policy (see the module docstring); torch 2.13
    TorchScript exporter, opset 17"""
    import torch  # noqa: PLC0415

    member, _, dim, _ = AGENTS[name]
    raw = git_file(RLZOO, member)
    digest = _check(name, raw, check)
    sd = torch.load(io.BytesIO(zipfile.ZipFile(io.BytesIO(raw)).read("policy.pth")), map_location="cpu")
    lin = torch.nn.Linear
    if name == "dqn_lunarlander":
        p = "q_net.q_net."
        net = torch.nn.Sequential(lin(dim, 256), torch.nn.ReLU(), lin(256, 256), torch.nn.ReLU(), lin(256, 4))
        net.load_state_dict({k[len(p):]: v for k, v in sd.items() if k.startswith(p)})
        outname = "q"
    elif name == "tqc_hopper":
        net = torch.nn.Sequential(lin(dim, 256), torch.nn.ReLU(), lin(256, 256), torch.nn.ReLU(), lin(256, 3),
                                  torch.nn.Tanh())  # fmt: skip
        a = "actor.latent_pi."
        net.load_state_dict({"0.weight": sd[a + "0.weight"], "0.bias": sd[a + "0.bias"],
                             "2.weight": sd[a + "2.weight"], "2.bias": sd[a + "2.bias"],
                             "4.weight": sd["actor.mu.weight"], "4.bias": sd["actor.mu.bias"]})  # fmt: skip
        outname = "action"
    else:
        vn = read_vecnormalize(git_file(RLZOO, VECNORM_MEMBER))
        plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vn.items()}
        (out / f"{name}.vecnormalize.json").write_text(json.dumps(plain))
        mlp = torch.nn.Sequential(lin(dim, 64), torch.nn.Tanh(), lin(64, 64), torch.nn.Tanh(), lin(64, 6))
        p = "mlp_extractor.policy_net."
        w = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        w["4.weight"], w["4.bias"] = sd["action_net.weight"], sd["action_net.bias"]
        mlp.load_state_dict(w)

        class Normalised(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("mean", torch.tensor(vn["mean"], dtype=torch.float32))
                std = np.sqrt(vn["var"] + vn["epsilon"])
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
                self.clip, self.mlp = vn["clip_obs"], mlp

            def forward(self, obs: Any) -> Any:
                x = torch.clamp((obs - self.mean) / self.std, -self.clip, self.clip)
                return torch.clamp(self.mlp(x), -1.0, 1.0)

        net, outname = Normalised(), "action"
    torch.onnx.export(net.eval(), (torch.zeros(1, dim),), str(out / f"{name}.onnx"), input_names=["obs"],
                      output_names=[outname], opset_version=17, dynamo=False,
                      dynamic_axes={"obs": {0: "batch"}, outname: {0: "batch"}})  # fmt: skip
    (out / f"{name}.source_sha256").write_text(digest)


def rollout(name: str, model: Path, seed: int, steps: int = 1000) -> tuple[float, np.ndarray, np.ndarray]:
    """one episode of the agent's env driven by ``model``: its return, the observations it fed the
    model and the model's outputs"""
    import gymnasium as gym  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    _, env_id, _, time_feature = AGENTS[name]
    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    total, seen, outs = 0.0, [], []
    for t in range(steps):
        x = obs.astype(np.float32)
        if time_feature:  # sb3_contrib TimeFeatureWrapper, max_steps 1000
            x = np.append(x, np.float32(1 - t / 1000))
        y = sess.run(None, {"obs": x[None]})[0][0]
        seen.append(x)
        outs.append(y)
        act = int(np.argmax(y)) if name == "dqn_lunarlander" else y
        obs, rew, term, trunc, _ = env.step(act)
        total += float(rew)
        if term or trunc:
            break
    return total, np.array(seen), np.array(outs)


def d_agent(name: str) -> Maker:
    def make(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        eps = [rollout(name, out / f"{name}.onnx", s)[1] for s in range(4)]
        xs = []
        for k in range(n):
            e = eps[int(r.integers(2)) + (2 if k >= N_CALIB else 0)]
            xs.append(e[int(r.integers(len(e)))][None])
        if n > 1:
            large = np.concatenate([eps[2][::5], eps[3][::5]])[:, None]
            _savez(out / f"{name}_eval_large.npz", {"obs": large})
        return {"obs": np.stack(xs)}

    make.__doc__ = (f"{AGENTS[name][1]} observations [1, {AGENTS[name][2]}] the fp32 policy meets in its own "
                    "episodes (seeds 0-3, from the reset on): calibration samples random steps of seeds 0-1, "
                    "eval samples random steps of seeds 2-3; NAME_eval_large.npz every 5th step of seeds 2-3")
    return make


def _action_metric(ref: list, got: list, discrete: bool) -> dict[str, Any]:
    a = np.array([np.asarray(x[0]).ravel() for x in ref], np.float64)
    b = np.array([np.asarray(x[0]).ravel() for x in got], np.float64)
    if discrete:
        return {"action_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
                "q_max_abs_diff": float(np.abs(a - b).max()), "n": len(ref)}  # fmt: skip
    return {"action_mean_abs_diff": float(np.abs(a - b).mean()),
            "action_max_abs_diff": float(np.abs(a - b).max()),
            "action_sign_agreement": float(np.mean(np.sign(a) == np.sign(b))), "n": len(ref)}  # fmt: skip


def evaluate31(out: Path, name: str, model: Path, seconds: float, episodes: int = 10) -> dict[str, Any]:
    """``evaluate`` (the bench's metric, size, latency) plus the action metric on the eval set and
    ``NAME_eval_large.npz``, and closed-loop returns where gymnasium is installed"""
    from bench_real_models import load_feeds, run_all  # noqa: PLC0415
    from unseen_models4 import read_manifest  # noqa: PLC0415

    res = evaluate(out, name, model, seconds)
    entry = read_manifest(out)[name]
    ref_path = out / entry["file"]
    inputs = list(entry["io"]["inputs"])
    disc = name == "dqn_lunarlander"
    feeds = load_feeds(out / entry["evaluation"], inputs, None)
    large = load_feeds(out / f"{name}_eval_large.npz", inputs, None)
    res["eval32"] = _action_metric(run_all(ref_path, feeds), run_all(model, feeds), disc)
    res["large"] = _action_metric(run_all(ref_path, large), run_all(model, large), disc)
    try:
        import gymnasium  # noqa: F401, PLC0415
    except ImportError:
        return res
    seeds = range(RETURN_SEEDS[0], RETURN_SEEDS[0] + episodes)
    ref = [rollout(name, ref_path, s) for s in seeds]
    got = [rollout(name, model, s) for s in seeds]
    rr, gr = np.array([x[0] for x in ref]), np.array([x[0] for x in got])
    res["return_fp32"], res["return"] = [round(x, 1) for x in rr], [round(x, 1) for x in gr]
    res["return_fp32_mean_std"] = [float(rr.mean()), float(rr.std(ddof=1))]
    res["return_mean_std"] = [float(gr.mean()), float(gr.std(ddof=1))]
    res["return_change_pct"] = float(100 * (gr.mean() / rr.mean() - 1))
    # the change's own standard error: paired over the same seeds
    res["return_change_se_pct"] = float(100 * (gr - rr).std(ddof=1) / np.sqrt(len(rr)) / rr.mean())
    res["episode_steps_fp32"] = [len(x[1]) for x in ref]
    res["episode_steps"] = [len(x[1]) for x in got]
    # the file's outputs on the observations fp32 met in closed loop (the same states)
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    obs = np.concatenate([x[1] for x in ref])
    y0 = np.concatenate([x[2] for x in ref])
    y1 = sess.run(None, {"obs": obs.astype(np.float32)})[0]
    res["fp32_states"] = _action_metric([[v] for v in y0], [[v] for v in y1], disc)
    return res


def _what(name: str) -> str:
    return {
        "dqn_lunarlander": "SB3 DQN Q-network for Box2D LunarLander (MLP 8 -> 256 -> 256 -> 4 ReLU; 69 k "
                           "parameters), exported with torch 2.13 (opset 17): [1, 8] raw observation -> "
                           "[1, 4] Q-values (greedy action = argmax)",
        "tqc_hopper": "SB3-contrib TQC actor for MuJoCo Hopper (MLP 11 -> 256 -> 256 -> 3, tanh; 70 k "
                      "parameters), exported with torch 2.13 (opset 17): [1, 11] raw observation -> "
                      "[1, 3] action",
        "ppo_walker2d_vecnorm": "SB3 PPO actor for MuJoCo Walker2d trained with VecNormalize and a time "
                                "feature (MLP 18 -> 64 -> 64 -> 6 tanh; 5.8 k parameters), the observation "
                                "normalisation exported into the graph, torch 2.13 (opset 17): [1, 18] raw "
                                "observation + time feature -> [1, 6] action clipped to [-1, 1]",
    }[name]


MODELS: dict[str, tuple[str, Maker, dict[str, Any]]] = {
    # the greedy action as fp32's (`--evaluate`: action agreement, closed-loop return)
    "dqn_lunarlander": (AGENTS["dqn_lunarlander"][0], d_agent("dqn_lunarlander"),
                        {"kind": "top1", "output": 0}),  # fmt: skip
    # the action's cosine to fp32's (`--evaluate`: action differences, closed-loop return)
    "tqc_hopper": (AGENTS["tqc_hopper"][0], d_agent("tqc_hopper"), {"kind": "cosine", "output": 0}),
    "ppo_walker2d_vecnorm": (AGENTS["ppo_walker2d_vecnorm"][0], d_agent("ppo_walker2d_vecnorm"),
                             {"kind": "cosine", "output": 0}),  # fmt: skip
}
# the fetched SB3 zip
SOURCE_SHA256: dict[str, str] = {
    "dqn_lunarlander": "72ac0007301b9e13415a543bc7243c40054fa70032cbb5c055eac09c19b69a7b",
    "tqc_hopper": "ad04cf1b354adb8810cd2a98f45f3c5179bd5c6d9fa83a1a7b8c1157094417e3",
    "ppo_walker2d_vecnorm": "fe779231c562fde585bbe96a56277a08e117e7d5a5afa4bfb289d260fc7299d7",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    member, maker, metric = MODELS[name]
    spec = f"{RLZOO[0]}@{RLZOO[1][:7]}"
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export_agent(name, out, check)
    digest = (out / f"{name}.source_sha256").read_text()
    print(name, "source sha256", digest, "file sha256", hashlib.sha256(dest.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, _what(name),
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{member}`, exported with torch 2.13"
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = dest.stat().st_size
    entry["evaluation_large"] = f"{name}_eval_large.npz"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    ap.add_argument("--episodes", type=int, default=10, help="closed-loop episodes (seeds 10, 11, ...)")

    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            print(json.dumps(evaluate31(args.out, name, Path(model), args.latency_seconds, args.episodes)))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
