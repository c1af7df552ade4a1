"""Search-space definitions: a YAML file in `search_spaces/` loaded into a validated, hashable config.

Glossary (after NNI's cell docstring):
- cell: a small DAG; node 0 and node 1 are its inputs (the outputs of the two previous cells; the first cell reads
  the sentence twice, or with `pair_inputs: cross` the other sentence aligned to it and the sentence itself),
  nodes 2..N+1 are intermediate nodes, and the output combines the intermediate nodes.
- edge: a connection from an earlier node i to an intermediate node j; during search it mixes every op.
- op: a sequence-to-sequence module `[B, T, H] -> [B, T, H]` named in the op registry (`adabert.nas.ops`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from adabert.core.errors import AdabertError
from adabert.core.fileio import hash_obj, read_yaml
from adabert.nas.ops import OPS

# search_spaces/ at the top of a source checkout; adabert/search_spaces/ inside an installed wheel.
BUILTIN_DIR = next((d for d in (Path(__file__).resolve().parents[2] / "search_spaces",
                                Path(__file__).resolve().parents[1] / "search_spaces") if d.is_dir()),
                   Path(__file__).resolve().parents[2] / "search_spaces")
_INT_FIELDS = ("hidden_size", "max_cells", "intermediate_nodes", "inputs_per_node", "cost_length")
PAIR_INPUTS = ("siamese", "cross")
PAIR_READOUTS = ("mlp", "linear")
# Optional fields with a fixed set of values; the first is the default, and left out of `definition` (below).
_CHOICES = (("pair_inputs", PAIR_INPUTS), ("pair_readout", PAIR_READOUTS))


@dataclass(frozen=True)
class SearchSpace:
    """A cell search space. Edges are enumerated node by node: for j = 2..N+1, i = 0..j-1.

    pair_inputs (sentence pairs only): "siamese" (the default) runs each sentence through the cells on its own and
    the readout aligns the two word by word; "cross" moves that comparison into the searched cells: node 0 of the
    first cell holds the other sentence softly aligned to this one (`supernet.soft_align` of the embeddings),
    node 1 the sentence itself, and the readout only matches the pooled vectors.
    pair_readout (sentence pairs only): how the readout classifies the matching features [u, v, u * v, |u - v|]
    of the pooled sentences (`supernet.Readout`): "mlp" (4H -> H -> tanh -> C; the value of spaces written
    before the field existed) or "linear" (4H -> C: 4H^2 fewer parameters in every cell's readout).
    """

    name: str
    hidden_size: int
    max_cells: int
    intermediate_nodes: int
    inputs_per_node: int
    dropout: float
    cost_length: int
    ops: tuple[str, ...]
    pair_inputs: str = "siamese"
    pair_readout: str = "mlp"

    @property
    def edges(self) -> list[tuple[int, int]]:
        """(from, to) pairs of the mixed edges, in alpha's row order."""
        return [(i, j) for j in range(2, 2 + self.intermediate_nodes) for i in range(j)]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def definition(self) -> dict:
        """The fields as written in YAML; `pair_inputs` and `pair_readout` only when they are not at their first
        value (so that spaces and arch.json files written before the fields existed keep their hash)."""
        d = asdict(self)
        d["ops"] = list(self.ops)
        for key, values in _CHOICES:
            if d[key] == values[0]:
                del d[key]
        return d

    @property
    def hash(self) -> str:
        """Hash of the definition (the same YAML content, whatever its comments and layout, has the same hash)."""
        return hash_obj(self.definition())

    @staticmethod
    def from_dict(d: object, source: str) -> "SearchSpace":
        """Validate a parsed definition; every problem names `source` and the field."""
        if not isinstance(d, dict):
            raise AdabertError(f"{source}: expected a mapping of search-space fields")
        required = ("name", *_INT_FIELDS, "dropout", "ops")
        fields = (*required, *(key for key, _ in _CHOICES))
        for key in required:
            if key not in d:
                raise AdabertError(f"{source}: missing key {key!r}")
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise AdabertError(f"{source}: unknown key {unknown[0]!r}; expected {', '.join(fields)}")
        for key in _INT_FIELDS:
            v = d[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise AdabertError(f"{source}: field {key!r} must be a positive integer, got {v!r}")
        if not isinstance(d["dropout"], (int, float)) or not 0 <= d["dropout"] < 1:
            raise AdabertError(f"{source}: field 'dropout' must be a number in [0, 1), got {d['dropout']!r}")
        if d["inputs_per_node"] > 2:
            raise AdabertError(f"{source}: field 'inputs_per_node' must be 1 or 2 (node 2 has only 2 inputs)")
        ops = d["ops"]
        if not isinstance(ops, list) or not ops:
            raise AdabertError(f"{source}: field 'ops' must be a non-empty list of op names")
        for op in ops:
            if op not in OPS:
                raise AdabertError(f"{source}: unknown op {op!r}; expected one of {', '.join(OPS)}")
        if len(set(ops)) != len(ops):
            raise AdabertError(f"{source}: field 'ops' lists an op twice")
        if all(op == "zero" for op in ops):
            raise AdabertError(f"{source}: field 'ops' needs at least one op other than 'zero'")
        choices = []
        for key, values in _CHOICES:
            v = d.get(key, values[0])
            if v not in values:
                raise AdabertError(f"{source}: field {key!r} must be one of {', '.join(values)}, got {v!r}")
            choices.append(v)
        return SearchSpace(str(d["name"]), *(d[k] for k in _INT_FIELDS[:4]), float(d["dropout"]), d["cost_length"],
                           tuple(ops), *choices)


def load_search_space(path_or_name: str | Path) -> SearchSpace:
    """Load a search space from a YAML file, or by name from the built-in `search_spaces/` folder."""
    path = Path(path_or_name)
    if not path.is_file() and not path.suffix and (BUILTIN_DIR / f"{path_or_name}.yaml").is_file():
        path = BUILTIN_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        raise AdabertError(f"{path_or_name}: search space file not found (built-in: "
                           f"{', '.join(p.stem for p in sorted(BUILTIN_DIR.glob('*.yaml')))})")
    return SearchSpace.from_dict(read_yaml(path, "search space definition"), str(path))
