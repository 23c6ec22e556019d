"""VerifyReport: what ``ganglion verify`` prints and what goes into the artifact manifest.

``to_dict()`` is plain JSON (the manifest's ``fidelity`` entry); ``render()`` is the text table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from converters.verify.metrics import SQNR_CAP
from converters.verify.per_layer import LayerError


@dataclass
class VerifyReport:
    candidate: str                          # "tflite" or "onnx" (QDQ)
    samples: int
    outputs: dict[str, dict]                # ONNX output name -> metrics
    accuracy: dict | None = None            # {"reference": float, "candidate": float, "labels": n}
    per_layer: list[LayerError] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "VerifyReport":
        """Rebuild a report stored in a manifest (for rendering it again)."""
        rows = data.get("per_layer")
        return cls(candidate=data["candidate"], samples=data["samples"], outputs=data["outputs"],
                   accuracy=data.get("accuracy"), notes=list(data.get("notes", [])),
                   per_layer=None if rows is None else [LayerError(**row) for row in rows])

    @property
    def summary(self) -> dict:
        """The first output's metrics: what one-line summaries and thresholds look at."""
        return next(iter(self.outputs.values()), {})

    def to_dict(self) -> dict:
        out = {"candidate": self.candidate, "samples": self.samples, "outputs": self.outputs,
               "accuracy": self.accuracy, "notes": list(self.notes)}
        if self.per_layer is not None:
            out["per_layer"] = [row.to_dict() for row in self.per_layer]
        return out

    def render(self, top: int = 10) -> str:
        lines = [f"verify: {self.candidate} candidate vs float ONNX reference, {self.samples} sample(s)", ""]
        lines += _table(["output", "SQNR dB", "cosine", "max abs", "mean abs", "top-1 agree"],
                        [[name, f"{m['sqnr_db']:.2f}", f"{m['cosine']:.5f}", f"{m['max_abs']:.4g}",
                          f"{m['mean_abs']:.4g}", _pct(m.get("top1_agreement"), "n/a")]
                         for name, m in self.outputs.items()])
        if self.accuracy:
            a = self.accuracy
            lines += ["", f"accuracy on {a['labels']} labels: float {_pct(a['reference'])}, "
                          f"candidate {_pct(a['candidate'])} ({(a['candidate'] - a['reference']) * 100:+.2f} points)"]
        if self.per_layer:
            shown = self.per_layer[:top]
            lines += ["", f"per layer, worst {len(shown)} of {len(self.per_layer)} by the error they add "
                          "(own SQNR: the layer alone, with exact inputs):", ""]
            lines += _table(["#", "node", "op", "own SQNR", "out SQNR", "in SQNR", "drop dB", "max abs"],
                            [[str(i + 1), r.node, r.op, f"{r.own_sqnr_db:.2f}", f"{r.sqnr_db:.2f}",
                              _exact_or(r.input_sqnr_db, f"{r.input_sqnr_db:.2f}"),
                              _exact_or(r.input_sqnr_db, f"{r.drop_db:+.2f}"), f"{r.max_abs:.4g}"]
                             for i, r in enumerate(shown)], left=3)
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _exact_or(input_sqnr_db: float, text: str) -> str:
    """An exact input (SQNR at the cap: the graph input itself) has no meaningful 'drop': say so
    instead of showing the cap minus the layer's SQNR (which read as '+156 dB')."""
    return "exact" if input_sqnr_db >= SQNR_CAP else text


def _pct(value, missing: str = "-") -> str:
    return missing if value is None else f"{value * 100:.2f}%"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns before ``left`` are text (left-aligned); the rest are numbers (right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i < left else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
