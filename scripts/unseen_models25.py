"""Fetch the twenty-fifth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch25.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had:

- ``chgnet``: CHGNet 0.3.0 (Deng et al. 2023), the crystal-graph neural network potential trained
  on the Materials Project trajectories, ``chgnet==0.4.2``'s
  ``chgnet/pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar``, built by the package's own
  ``CHGNet.from_file`` (its wheel unpacked, pymatgen stubbed: only the structure -> graph step
  needs it, and this script does that step in numpy) and exported from the bond vectors on by
  torch 2.13 defaults: atomic numbers [8], directed bond vectors [D, 3] and the package's graph
  index lists -> energy per atom [1] (eV, without the package's fixed ``AtomRef`` composition
  term) and site magnetic moments [8] (mu_B). Radial Bessel / Fourier bases, the embeddings, 4
  atom-conv, 3 bond-conv and 3 angle-update layers (``index_select`` gathers, ``index_add``
  scatters) and the site-energy readout are in the graph; forces (the package's autograd of the
  energy) are not, and ``--forces`` takes them by central differences of the ONNX energy.
  Graphs are padded to fixed sizes with bonds longer than the 6 A cutoff: the package's smooth
  cutoff makes their weights exactly 0, so padding changes no output.
- ``sevennet``: SevenNet-0 (11Jul2024), an E(3)-equivariant NequIP-style potential (e3nn tensor
  products, l <= 2), ``sevenn==0.13.0``'s ``checkpoint_sevennet_0.pth``, built by the package's
  ``model_from_checkpoint`` (e3nn 0.6.0 and helpers pip-installed ``--target`` into the cache) with
  its force output removed: atomic numbers [8], edge index [2, 640], edge vectors [640, 3] ->
  energy per atom [1] and atomic energies [8]. Padded edges are exactly 5 A long, where its XPLOR
  cutoff is 0 (past 5 A that polynomial is not).

Both read the same cells: 8-atom rock-salt / zinc-blende / diamond cells of 28 compounds,
strained and with displaced atoms; the neighbour lists are built here in numpy.

    /work/venv-torch/bin/python scripts/unseen_models25.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models25.py --evaluate NAME MODEL   # metric of a compressed file
    /work/venv/bin/python scripts/unseen_models25.py --forces NAME MODEL [--force-cells 8]
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models15 import _package, _pinned_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen25"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

# ---------------------------------------------------------------------------------------------
# CHGNet: a crystal graph network potential

CHG_SPEC = "chgnet==0.4.2"
CHG_MEMBER = "chgnet/pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"
N_ATOMS = 8  # 8-atom conventional cubic cells
D_MAX, A_MAX = 1200, 2400  # padded directed bonds (6 A) and angles (bonds of 3 A sharing an atom)
CUTOFF, BOND_CUTOFF = 6.0, 3.0
# a padded bond's length: CHGNet's bases are 0 past its cutoffs; SevenNet's XPLOR cutoff is 0 at
# 5 A exactly and not past it (a polynomial the neighbour list never feeds a longer bond)
PAD_LENGTH = {"chgnet": 10.0, "sevennet": 5.0}
# (formula A, B, lattice constant in A) of 8-atom cubic cells: rock salt and zinc blende / diamond
ROCKSALT = [("Na", "Cl", 5.64), ("K", "Cl", 6.29), ("Mg", "O", 4.21), ("Ca", "O", 4.81),
            ("Ni", "O", 4.18), ("Mn", "O", 4.44), ("Fe", "O", 4.33), ("Co", "O", 4.26),
            ("Na", "F", 4.63), ("Li", "Cl", 5.13), ("Sr", "O", 5.16), ("Ba", "O", 5.52),
            ("Ti", "C", 4.33), ("Ti", "N", 4.24), ("Pb", "S", 5.94), ("Ag", "Cl", 5.55)]  # fmt: skip
ZINCBLENDE = [("Ga", "As", 5.65), ("Zn", "S", 5.41), ("In", "P", 5.87), ("Ga", "P", 5.45),
              ("Al", "As", 5.66), ("Cd", "Te", 6.48), ("Zn", "Se", 5.67), ("Si", "Si", 5.43),
              ("Ge", "Ge", 5.66), ("Cu", "Cl", 5.41), ("Si", "C", 4.36), ("Ga", "N", 4.50)]  # fmt: skip
ELEMENTS = (  # noqa: SIM905
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm "
    "Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb"
).split()
FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def _stand_in(attr: str) -> Any:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return object


def _import_with_stand_ins(module: str, attr: str, own: str) -> Any:
    """``module.attr``, with empty stand-ins for the modules it imports that are not installed
    (pymatgen, ASE, nvidia_smi, ...: only the packages' structure / GPU / training helpers read
    them; the networks are plain torch)"""
    import importlib  # noqa: PLC0415

    for _ in range(40):
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            assert e.name and not e.name.startswith(own), e
            for part in range(1, e.name.count(".") + 2):
                stub = types.ModuleType(".".join(e.name.split(".")[:part]))
                stub.__getattr__ = _stand_in  # type: ignore[method-assign]
                stub.__path__ = []  # type: ignore[attr-defined]
                sys.modules.setdefault(stub.__name__, stub)
    raise ImportError(module)


def _chgnet(out: Path, check: bool) -> Any:
    """the package's ``CHGNet`` built by its own ``from_file`` from the pinned checkpoint"""
    path = _pinned_member(out, CHG_SPEC, CHG_MEMBER, "chgnet_0.3.0.pth.tar",
                          SOURCE_SHA256["chgnet"] if check else None)  # fmt: skip
    src = _package(out, CHG_SPEC, "chgnet")
    if "chgnet.model" not in sys.modules:  # its __init__ imports the ASE calculator (not needed)
        pkg = types.ModuleType("chgnet.model")
        pkg.__path__ = [str(src / "chgnet" / "model")]  # type: ignore[attr-defined]
        sys.modules["chgnet.model"] = pkg
    CHGNet = _import_with_stand_ins("chgnet.model.model", "CHGNet", "chgnet")  # noqa: N806
    return CHGNet.from_file(str(path), mlp_out_bias=False, version="0.3.0").eval()


def _crystal(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """an 8-atom cubic cell: rock salt or zinc blende / diamond of a listed compound, strained by
    -3..+3 % and every atom displaced by 0.06 A (rms per axis): (Z [8], cart [8, 3], a)"""
    rocksalt = r.random() < 0.55
    table = ROCKSALT if rocksalt else ZINCBLENDE
    a_el, b_el, a0 = table[int(r.integers(len(table)))]
    shift = np.array([0.5, 0, 0]) if rocksalt else np.array([0.25, 0.25, 0.25])
    frac = np.concatenate([FCC, (FCC + shift) % 1.0])
    z = np.array([ELEMENTS.index(a_el) + 1] * 4 + [ELEMENTS.index(b_el) + 1] * 4, np.int64)
    a = a0 * (1 + r.uniform(-0.03, 0.03))
    return z, frac * a + r.normal(0, 0.06, (N_ATOMS, 3)), a


def _neighbors(cart: np.ndarray, a: float) -> tuple[np.ndarray, ...]:
    """pymatgen's ``get_neighbor_list(r=6)`` of a cubic cell: (center, neighbor, image, distance)"""
    k = int(np.ceil(CUTOFF / a)) + 1
    rng = np.arange(-k, k + 1)
    images = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3).astype(float)
    got: list[tuple[int, int, np.ndarray, float]] = []
    for i in range(N_ATOMS):
        for j in range(N_ATOMS):
            d = np.linalg.norm(cart[j] + images * a - cart[i], axis=1)
            for m in np.nonzero((d < CUTOFF) & (d > 1e-8))[0]:
                got.append((i, j, images[m], float(d[m])))
    c, n, img, dist = zip(*got, strict=True)
    return np.array(c), np.array(n), np.array(img), np.array(dist)


def _graph(z: np.ndarray, cart: np.ndarray, a: float) -> dict[str, np.ndarray]:
    """the package's graph of one cell (``CrystalGraphConverter``'s legacy algorithm on the
    neighbor list), padded to ``D_MAX`` directed bonds / ``A_MAX`` angles"""
    from chgnet.graph.converter import CrystalGraphConverter  # noqa: PLC0415

    c, n, img, dist = _neighbors(cart, a)
    graph = CrystalGraphConverter._create_graph_legacy(N_ATOMS, c, n, img, dist)
    atom_graph, d2u = (np.array(x, np.int64) for x in graph.adjacency_list())
    bond_graph, u2d = (np.array(x, np.int64) for x in graph.line_graph_adjacency_list(cutoff=BOND_CUTOFF))
    images = np.array([e.info["image"] for e in graph.directed_edges_list])  # per directed bond
    vec = cart[atom_graph[:, 0]] - (cart[atom_graph[:, 1]] + images * a)
    d, u, na = len(atom_graph), len(u2d), len(bond_graph)
    if d + 1 > D_MAX or na > A_MAX:
        raise ValueError(f"graph of {d} bonds / {na} angles past the padding {D_MAX} / {A_MAX}")
    pad_vec = np.tile([[PAD_LENGTH["chgnet"], 0.0, 0.0]], (D_MAX - d, 1))
    return {
        "atomic_numbers": z.astype(np.int64),
        "bond_vectors": np.concatenate([vec, pad_vec]).astype(np.float32),
        "atom_graph": np.concatenate([atom_graph, np.zeros((D_MAX - d, 2), np.int64)]),
        "directed2undirected": np.concatenate([d2u, np.full(D_MAX - d, u)]),  # one padded bond
        "undirected2directed": np.concatenate([u2d, np.full(D_MAX - u, d)]),  # -> a padded bond
        "bond_graph": np.concatenate([bond_graph, np.tile([[0, u, d, u, d]], (A_MAX - na, 1))]),
    }


def _chgnet_piece(model: Any) -> Any:
    """CHGNet's ``BatchedGraph.from_graphs`` (from the bond vectors on) and ``_compute`` (energy,
    magmom) for one padded graph, as the package computes them"""
    import torch
    from chgnet.model import layers  # noqa: PLC0415
    from torch import nn

    package_aggregate = getattr(layers.aggregate, "package", layers.aggregate)

    def aggregate(data: Any, owners: Any, *, average: bool = True, num_owner: int | None = None) -> Any:
        # the package's sum (every call of the piece: average=False, num_owner given) without its
        # bincount, which only sizes the output and which torch.export cannot size
        if average or num_owner is None:
            return package_aggregate(data, owners, average=average, num_owner=num_owner)
        return data.new_zeros([num_owner, data.shape[1]]).index_add(0, owners, data)

    aggregate.package = package_aggregate  # type: ignore[attr-defined]
    layers.aggregate = aggregate

    class Piece(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, atomic_numbers: Any, bond_vectors: Any, atom_graph: Any, directed2undirected: Any,
                    undirected2directed: Any, bond_graph: Any) -> tuple[Any, Any]:  # fmt: skip
            m = self.m
            lengths = torch.norm(bond_vectors, dim=1)
            unit = bond_vectors / lengths[:, None]
            ul = torch.index_select(lengths, 0, undirected2directed)
            bases_ag = m.bond_basis_expansion.rbf_expansion_ag(ul)
            bases_bg = m.bond_basis_expansion.rbf_expansion_bg(ul)
            angle_bases = m.angle_basis_expansion(torch.index_select(unit, 0, bond_graph[:, 2]),
                                                  torch.index_select(unit, 0, bond_graph[:, 4]))  # fmt: skip
            bg = torch.stack([bond_graph[:, 0], bond_graph[:, 1], bond_graph[:, 3]], 1)
            atom_feas = m.atom_embedding(atomic_numbers - 1)
            bond_feas = m.bond_embedding(bases_ag)
            w_ag, w_bg = m.bond_weights_ag(bases_ag), m.bond_weights_bg(bases_bg)
            angle_feas = m.angle_embedding(angle_bases)
            d2u = directed2undirected
            magmom = atom_feas[:, 0]
            for idx, (atom_layer, bond_layer, angle_layer) in enumerate(
                zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers, strict=False)
            ):
                atom_feas = atom_layer(atom_feas=atom_feas, bond_feas=bond_feas, bond_weights=w_ag,
                                       atom_graph=atom_graph, directed2undirected=d2u)  # fmt: skip
                if bond_layer is not None:
                    bond_feas = bond_layer(atom_feas=atom_feas, bond_feas=bond_feas, bond_weights=w_bg,
                                           angle_feas=angle_feas, bond_graph=bg)  # fmt: skip
                    if angle_layer is not None:
                        angle_feas = angle_layer(atom_feas=atom_feas, bond_feas=bond_feas,
                                                 angle_feas=angle_feas, bond_graph=bg)  # fmt: skip
                if idx == m.n_conv - 2:
                    magmom = torch.abs(m.site_wise(atom_feas)).view(-1)
            atom_feas = m.atom_conv_layers[-1](atom_feas=atom_feas, bond_feas=bond_feas, bond_weights=w_ag,
                                               atom_graph=atom_graph, directed2undirected=d2u)  # fmt: skip
            if m.readout_norm is not None:
                atom_feas = m.readout_norm(atom_feas)
            assert m.mlp_first and m.is_intensive
            energy = m.mlp(atom_feas).sum(0) / atomic_numbers.shape[0]  # the package's sum pooling / atoms
            return energy, magmom

    return Piece().eval()


def d_chgnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """8-atom cubic cells of 28 rock-salt / zinc-blende / diamond compounds (oxides of Ni, Mn, Fe,
    Co among them), strained -3..+3 %, atoms displaced 0.06 A rms: the package's graph inputs"""
    _chgnet(out, False)  # the package on sys.path
    feeds = [_graph(*_crystal(r)) for _ in range(n)]
    return {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}


def export_chgnet(out: Path, check: bool) -> None:
    import torch

    piece = _chgnet_piece(_chgnet(out, check))
    g = _graph(*_crystal(np.random.default_rng(0)))
    args = tuple(torch.from_numpy(v) for v in g.values())
    torch.onnx.export(piece, args, str(out / "chgnet.onnx"), input_names=list(g),
                      output_names=["energy_per_atom", "magmom"])  # fmt: skip


def _moves(name: str, feed: dict[str, np.ndarray], k: int) -> tuple[str, np.ndarray]:
    """(input, d vector / d position of atom k per row): CHGNet's bond vectors are centre minus
    neighbour, SevenNet's edge vectors neighbour (edge_index[1]) minus centre (edge_index[0]);
    padded rows do not move"""
    if name == "chgnet":
        g, key = feed["atom_graph"], "bond_vectors"
        sign = (g[:, 0] == k).astype(np.float32) - (g[:, 1] == k).astype(np.float32)
    else:
        g, key = feed["edge_index"], "edge_vec"
        sign = (g[1] == k).astype(np.float32) - (g[0] == k).astype(np.float32)
    sign[np.linalg.norm(feed[key], axis=1) >= PAD_LENGTH[name]] = 0
    return key, sign


def _forces(name: str, sess: Any, feed: dict[str, np.ndarray], h: float = 0.01) -> np.ndarray:
    """forces [8, 3] (eV/A): minus the central difference (h = 0.01 A) of the ONNX energy"""
    f = np.zeros((N_ATOMS, 3))
    for k in range(N_ATOMS):
        key, sign = _moves(name, feed, k)
        for ax in range(3):
            es = []
            for step in (h, -h):
                v = feed[key].copy()
                v[:, ax] += step * sign
                es.append(float(sess.run(None, {**feed, key: v})[0][0]) * N_ATOMS)
            f[k, ax] = -(es[0] - es[1]) / (2 * h)
    return f


def force_errors(out: Path, name: str, model: Path, n: int = 8) -> dict[str, Any]:
    """forces of a compressed ``model`` against fp32's on the first ``n`` eval cells: mean absolute
    error (eV/A), relative error ||dF|| / ||F||, and fp32's force scale"""
    import onnxruntime as ort

    z = np.load(out / f"{name}_eval.npz")
    feeds = [{k: z[k][i] for k in z.files} for i in range(n)]
    ref_s, got_s = (ort.InferenceSession(str(p)) for p in (out / f"{name}.onnx", model))
    ref = np.stack([_forces(name, ref_s, f) for f in feeds])
    got = np.stack([_forces(name, got_s, f) for f in feeds])
    return {"model": name, "file": str(model), "force_mae": float(np.mean(np.abs(got - ref))),
            "force_rel": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
            "fp32_force_rms": float(np.sqrt(np.mean(ref**2)))}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# SevenNet-0: an E(3)-equivariant graph network potential (NequIP architecture, e3nn)

SEVEN_SPEC = "sevenn==0.13.0"
SEVEN_MEMBER = "sevenn/pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth"
SEVEN_DEPS = ["e3nn==0.6.0", "opt-einsum==3.4.0", "opt-einsum-fx==0.1.4", "braceexpand==0.1.7"]
E_MAX = 640  # padded directed edges within SevenNet's 5 A cutoff


def _sevennet(out: Path, check: bool) -> Any:
    """the package's model (``sevenn.util.model_from_checkpoint``) of the pinned checkpoint, its
    force / stress output taken off (the energy is the graph's output)"""
    import subprocess  # noqa: PLC0415

    path = _pinned_member(out, SEVEN_SPEC, SEVEN_MEMBER, "checkpoint_sevennet_0.pth",
                          SOURCE_SHA256["sevennet"] if check else None)  # fmt: skip
    lib = out / "pylib"  # e3nn and its helpers, pure Python, beside (not in) the torch env
    if not (lib / "e3nn").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(lib),
                        *SEVEN_DEPS], check=True)  # fmt: skip
    if str(lib) not in sys.path:
        sys.path.insert(0, str(lib))
    _package(out, SEVEN_SPEC, "sevenn")
    # imported inside the loader (ASE, pandas stood in)
    _import_with_stand_ins("sevenn.checkpoint", "SevenNetCheckpoint", "sevenn")
    _import_with_stand_ins("sevenn.model_build", "build_E3_equivariant_model", "sevenn")
    load = _import_with_stand_ins("sevenn.util", "model_from_checkpoint", "sevenn")
    model, _ = load(str(path))
    model.eval()
    model.set_is_batch_data(False)
    model.delete_module_by_key("force_output")
    model.key_grad = None
    return model


def _edges(z: np.ndarray, cart: np.ndarray, a: float) -> dict[str, np.ndarray]:
    """ASE's ``primitive_neighbor_list('ijD', 5 A)`` as SevenNet builds it (edge i -> j, vector
    pos_j + shift - pos_i), padded to ``E_MAX`` edges of length exactly 5 A"""
    c, n, img, dist = _neighbors(cart, a)
    keep = dist < PAD_LENGTH["sevennet"]
    c, n, img = c[keep], n[keep], img[keep]
    if len(c) > E_MAX:
        raise ValueError(f"{len(c)} edges past the padding {E_MAX}")
    pad = E_MAX - len(c)
    return {
        "atomic_numbers": z.astype(np.int64),
        "edge_index": np.concatenate([np.stack([c, n]), np.zeros((2, pad), np.int64)], 1),
        "edge_vec": np.concatenate([cart[n] + img * a - cart[c], np.tile([[PAD_LENGTH["sevennet"], 0.0, 0.0]],
                                                                         (pad, 1))]).astype(np.float32),
    }  # fmt: skip


def d_sevennet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the cells of ``d_chgnet`` (same compounds, strain, displacement) as SevenNet's edge lists"""
    feeds = [_edges(*_crystal(r)) for _ in range(n)]
    return {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}


def export_sevennet(out: Path, check: bool) -> None:
    import torch
    from torch import nn

    model = _sevennet(out, check)

    class Piece(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, atomic_numbers: Any, edge_index: Any, edge_vec: Any) -> tuple[Any, Any]:
            d = self.m({"x": atomic_numbers, "atomic_numbers": atomic_numbers, "edge_index": edge_index,
                        "edge_vec": edge_vec})  # fmt: skip
            energy = d["inferred_total_energy"].reshape(1) / atomic_numbers.shape[0]
            return energy, d["atomic_energy"].reshape(-1)

    g = _edges(*_crystal(np.random.default_rng(0)))
    args = tuple(torch.from_numpy(v) for v in g.values())
    torch.onnx.export(Piece().eval(), args, str(out / "sevennet.onnx"), input_names=list(g),
                      output_names=["energy_per_atom", "atomic_energy"])  # fmt: skip


def _energy_metric(ref: list, got: list) -> dict[str, Any]:
    """energy per atom (meV/atom) and the second output (site magmoms / atomic energies) against fp32"""
    de = [abs(float(a[0][0]) - float(b[0][0])) * 1000 for a, b in zip(ref, got, strict=True)]
    d1 = [float(np.mean(np.abs(np.asarray(a[1]) - np.asarray(b[1])))) for a, b in zip(ref, got, strict=True)]
    return {"energy_mae_mev_atom": float(np.mean(de)), "energy_max_mev_atom": float(np.max(de)),
            "second_output_mae": float(np.mean(d1))}  # fmt: skip


EXTRA_METRICS["chgnet"] = _energy_metric
EXTRA_METRICS["sevennet"] = _energy_metric


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # samples whose energy per atom is within 5 meV/atom of fp32's (CHGNet's own test MAE: 30)
    "chgnet": (
        CHG_SPEC,
        CHG_MEMBER,
        "CHGNet 0.3.0 crystal-graph potential (412,525 weights), bond vectors + graph index "
        "lists -> energy per atom, site magmoms; torch 2.13 export",
        d_chgnet,
        {"kind": "within", "output": 0, "tol": 0.005},
    ),  # fmt: skip
    "sevennet": (
        SEVEN_SPEC,
        SEVEN_MEMBER,
        "SevenNet-0 (11Jul2024) E(3)-equivariant NequIP-style potential (842,623 weights, l <= 2, "
        "5 interaction blocks), edge vectors + edge index -> energy per atom, atomic energies; "
        "torch 2.13 export",
        d_sevennet,
        {"kind": "within", "output": 0, "tol": 0.005},
    ),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "chgnet": "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1",
    "sevennet": "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36",
}
EXPORTS: dict[str, Callable[[Path, bool], None]] = {"chgnet": export_chgnet, "sevennet": export_sevennet}
SOURCES: dict[str, str] = {"chgnet": "chgnet_0.3.0.pth.tar", "sevennet": "checkpoint_sevennet_0.pth"}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out, check)
    src = out / SOURCES[name]
    print(name, "source sha256", hashlib.sha256(src.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"PyPI `{spec}`, `{member}`, exported by torch 2.13 defaults"
    entry["source_sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    return entry


def _forces_option(ap: Any) -> Callable[[Any], bool]:
    ap.add_argument("--forces", nargs=2, metavar=("NAME", "MODEL"),
                    help="only the forces (central differences of the energy) of a compressed MODEL "
                         "vs fp32")  # fmt: skip

    ap.add_argument("--force-cells", type=int, default=8, help="eval cells --forces reads (default 8)")

    def handle(args: Any) -> bool:
        if args.forces:
            print(json.dumps(force_errors(args.out, args.forces[0], Path(args.forces[1]), args.force_cells)))
        return bool(args.forces)

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _forces_option)


if __name__ == "__main__":
    main()
