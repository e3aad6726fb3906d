import pandas as pd

from cxrsynth.tasks.diffusion.plan import finding_counts, generation_plan, image_seed, needs_mask
from cxrsynth.tasks.params import GenerateParams


def _train(n=100, pneumothorax=3, nodule=12):
    return pd.DataFrame({"pneumothorax": pd.array([1] * pneumothorax + [0] * (n - pneumothorax), dtype="Int8"),
                         "nodule": pd.array([1] * nodule + [None] * (n - nodule), dtype="Int8")})


def test_counts_bring_each_rare_finding_up_to_the_target_share():
    counts = finding_counts(_train(), GenerateParams(target_share=0.1, max_per_finding=400)).set_index("finding")
    assert counts.loc["pneumothorax", "target"] == 10 and counts.loc["pneumothorax", "planned"] == 7
    assert counts.loc["nodule", "planned"] == 0  # already above the share


def test_counts_are_capped_and_need_at_least_one_real_positive():
    capped = finding_counts(_train(), GenerateParams(target_share=0.5, max_per_finding=20)).set_index("finding")
    assert capped.loc["pneumothorax", "planned"] == 20 and capped.loc["nodule", "planned"] == 20
    none = finding_counts(_train(pneumothorax=0), GenerateParams(target_share=0.5)).set_index("finding")
    assert none.loc["pneumothorax", "planned"] == 0


def test_plan_cycles_condition_types_and_extends_stably():
    counts = pd.DataFrame({"finding": ["pneumothorax", "nodule"], "planned": [7, 4]})
    types = {"pneumothorax": ["label+mask+text", "label+mask", "text"], "nodule": []}
    plan = generation_plan(counts, types, seed=0)
    assert len(plan) == 7 and set(plan["finding"]) == {"pneumothorax"}
    assert plan["condition_type"].value_counts().to_dict() == {"label+mask+text": 3, "label+mask": 2, "text": 2}
    assert plan["image_id"].tolist()[:2] == ["syn_pneumothorax_00000", "syn_pneumothorax_00001"]
    shorter = generation_plan(counts.assign(planned=[4, 0]), types, seed=0)
    assert shorter.equals(plan.head(4))
    assert plan["seed"].nunique() == 7
    assert not generation_plan(counts, types, seed=1)["seed"].equals(plan["seed"])


def test_seeds_and_mask_types():
    assert image_seed(0, "nodule", 3) == image_seed(0, "nodule", 3) != image_seed(0, "pneumothorax", 3)
    assert 0 <= image_seed(5, "nodule", 0) < 2**31
    assert needs_mask("label+mask") and needs_mask("mask") and not needs_mask("label+text")
