"""What a specialization measured and spent: one record, written to its folder's results.json.

Every method's specialization ends in a :class:`SpecializeResults`; :meth:`SpecializeResults.as_dict` is
results.json's contents (methods.specialize adds the fingerprint). The routed methods add which cluster's SLM they
started from (:class:`Selection`); a method's own tuning may add fields of its own (slm-d: its teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Selection:
    """Where a routed method's specialization started: the rule (cfg.select), the cluster it picked (or
    "histogram"), the domain's cluster histogram and the candidates' domain validation NLL when measured."""

    select: str
    selected_cluster: int | str
    k: int
    domain_histogram: list[float]
    top_cluster_share: float
    candidates_valid_nll: dict[str, float]


@dataclass(frozen=True)
class SpecializeResults:
    """One specialization: the test splits before and after fine-tuning (generic and the domain: nll, ppl, tokens,
    bpb), the fine-tuning run (steps, best step, what stopped it under which budget), and its costs (cost: up to
    the best validation step, the paper's count; cost_all_steps: every step run; *_parts: by stage)."""

    domain: str
    method: str
    pretrained_from: str | None
    domain_train_tokens: int
    before: dict
    after: dict
    finetune_steps: int
    best_step: int | None
    stopped_early: bool
    stopped_by: str
    planned_steps: int | None
    max_epochs: float
    step_cap: int
    wall_s: float
    cost: dict
    cost_parts: dict
    cost_all_steps: dict
    cost_parts_all_steps: dict
    inference_flops_per_token: float
    config: dict
    selection: Selection | None = None  # the routed methods'
    extra: dict = field(default_factory=dict)  # a method's own tuning's fields (slm-d: teacher, distill)

    def as_dict(self) -> dict:
        """results.json's keys, in their order: domain, method, the selection's, the run's up to wall_s, the
        tuning's own, the costs, config."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("selection", "extra")}
        names = list(own)
        cut = names.index("cost")  # the run's fields end with wall_s, just before it
        chosen = {} if self.selection is None else {f.name: getattr(self.selection, f.name)
                                                    for f in fields(self.selection)}
        return ({k: own[k] for k in names[:2]} | chosen | {k: own[k] for k in names[2:cut]} | dict(self.extra)
                | {k: own[k] for k in names[cut:]})
