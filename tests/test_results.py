"""results.json's record (mlx_pn.methods.results): the keys every method's specialization writes, in their order."""

from mlx_pn.methods.results import Selection, SpecializeResults

RUN = dict(domain="legal", method="slm", pretrained_from="out/pretrain/final", domain_train_tokens=100,
           before={"generic": {}}, after={"generic": {}}, finetune_steps=8, best_step=4, stopped_early=False,
           stopped_by="steps", planned_steps=8, max_epochs=0, step_cap=8, wall_s=1.5, cost={"flops": 1.0},
           cost_parts={}, cost_all_steps={"flops": 2.0}, cost_parts_all_steps={}, inference_flops_per_token=3.0,
           config={"method": "slm"})
PLAIN = ["domain", "method", "pretrained_from", "domain_train_tokens", "before", "after", "finetune_steps", "best_step",
         "stopped_early", "stopped_by", "planned_steps", "max_epochs", "step_cap", "wall_s", "cost", "cost_parts",
         "cost_all_steps", "cost_parts_all_steps", "inference_flops_per_token", "config"]


def test_a_plain_specialization_writes_the_keys_of_before():
    d = SpecializeResults(**RUN).as_dict()
    assert list(d) == PLAIN and d["cost"] == {"flops": 1.0} and d["best_step"] == 4


def test_a_tuning_adds_its_fields_after_wall_s():
    d = SpecializeResults(**RUN, extra={"teacher": "t/final", "distill": {"mode": "live"}}).as_dict()
    i = PLAIN.index("wall_s") + 1
    assert list(d) == PLAIN[:i] + ["teacher", "distill"] + PLAIN[i:] and d["distill"] == {"mode": "live"}


def test_a_routed_specialization_names_its_selection_after_the_method():
    sel = Selection(select="most-frequent", selected_cluster=2, k=4, domain_histogram=[0.1, 0.2, 0.6, 0.1],
                    top_cluster_share=0.6, candidates_valid_nll={})
    d = SpecializeResults(**RUN, selection=sel).as_dict()
    assert list(d) == PLAIN[:2] + ["select", "selected_cluster", "k", "domain_histogram", "top_cluster_share",
                                   "candidates_valid_nll"] + PLAIN[2:]
    assert d["selected_cluster"] == 2 and d["domain_histogram"][2] == 0.6
