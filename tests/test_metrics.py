import numpy as np
import pytest

from adabert.data.metrics import (class_report, describe_dev, f1_binary, matthews, paired_difference, pearson,
                                  spearman, task_metrics, teacher_agreement)
from adabert.data.tasks import get_task


def test_f1_and_matthews_by_hand():
    gold = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    # tp=3, fp=1, fn=1, tn=3
    assert f1_binary(pred, gold) == pytest.approx(6 / 8)
    assert matthews(pred, gold) == pytest.approx((3 * 3 - 1 * 1) / np.sqrt(4 * 4 * 4 * 4))


def test_pearson_spearman_with_ties():
    x = np.array([1.0, 2.0, 2.0, 4.0])
    y = np.array([10.0, 20.0, 30.0, 40.0])
    # ranks of x: 0, 1.5, 1.5, 3 ; ranks of y: 0, 1, 2, 3
    rx, ry = np.array([0, 1.5, 1.5, 3]), np.arange(4.0)
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_task_metrics_and_report():
    task = get_task("mrpc")
    logits = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    gold = np.array([1, 1, 1, 0])
    m = task_metrics(task, logits, gold)
    assert list(m) == ["f1", "accuracy"] and m["accuracy"] == pytest.approx(75.0)
    rep = class_report(task, logits, gold)
    assert rep["confusion"] == [[1, 0], [1, 2]]
    assert rep["per_class"]["equivalent"]["precision"] == pytest.approx(100.0)
    assert rep["per_class"]["equivalent"]["recall"] == pytest.approx(200 / 3)


def test_paired_difference_is_the_lead_and_its_bootstrap_standard_error():
    sst2, n, k = get_task("sst2"), 400, 40
    gold = np.arange(n) % 2
    right = np.eye(2)[gold]  # logits that give every gold label
    wrong = right.copy()
    wrong[:k] = right[:k, ::-1]  # b misses the first k rows
    lead, se = paired_difference(sst2, right, wrong, gold, draws=2000)
    assert lead == pytest.approx(100 * k / n)
    # the per-row difference is 1 on k rows and 0 elsewhere: s.e. of its mean = sqrt(p (1 - p) / n)
    assert se == pytest.approx(100 * np.sqrt(0.1 * 0.9 / n), rel=0.1)
    assert paired_difference(sst2, wrong, right, gold, draws=200)[0] == pytest.approx(-lead)
    assert paired_difference(sst2, right, right, gold, draws=200) == (0.0, 0.0)  # same predictions: no doubt
    # errors the two models share cancel: both miss rows 100-199 as well, the lead and its s.e. stay the same
    both = np.concatenate([right[:100], right[100:200, ::-1], right[200:]])
    worse = both.copy()
    worse[:k] = both[:k, ::-1]
    lead2, se2 = paired_difference(sst2, both, worse, gold, draws=2000)
    assert lead2 == pytest.approx(lead) and se2 == pytest.approx(se, rel=0.15)


def test_paired_difference_of_a_regression_metric():
    stsb, rng = get_task("stsb"), np.random.default_rng(0)
    gold = rng.uniform(0, 5, 300)
    close, far = gold + rng.normal(0, 0.5, 300), gold + rng.normal(0, 2.0, 300)
    lead, se = paired_difference(stsb, close[:, None], far[:, None], gold)
    assert lead == pytest.approx(100 * (pearson(close, gold) - pearson(far, gold))) and lead > 4 * se > 0


def test_teacher_agreement_by_hand():
    sst2, stsb = get_task("sst2"), get_task("stsb")
    student = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])  # labels 1, 0, 1, 0
    teacher = np.array([[0.0, 5.0], [0.0, 1.0], [0.0, 1.0], [4.0, 0.0]])  # labels 1, 1, 1, 0: 3 of 4 agree
    gold = np.array([0, 0, 0, 0])  # the gold labels play no part
    assert teacher_agreement(sst2, student, teacher) == pytest.approx(75.0)
    line = describe_dev(sst2, {"dev": task_metrics(sst2, student, gold), "dev_teacher_agreement": 75.0})
    assert line == "accuracy 50.00, f1 0.00; % same label as the teacher 75.00"
    s, t = np.array([[1.0], [2.0], [4.0]]), np.array([[0.5], [2.5], [3.0]])
    assert teacher_agreement(stsb, s, t) == pytest.approx(100 * np.corrcoef([1, 2, 4], [0.5, 2.5, 3])[0, 1])
    assert "Pearson r with the teacher" in describe_dev(stsb, {"dev": {"pearson": 1.0}, "dev_teacher_agreement": 90.0})


def test_majority_baseline_and_the_warning_when_the_teacher_is_near_it():
    from adabert.data.metrics import baseline_warning, majority_baseline

    mrpc = get_task("mrpc")
    train, dev = np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0, 1])
    b = majority_baseline(mrpc, train, dev)
    assert b["accuracy"] == pytest.approx(60.0) and b["f1"] == pytest.approx(75.0)  # always "equivalent"
    assert baseline_warning(mrpc, {"f1": 76.5, "accuracy": 62.0}, b) == (
        "the teacher's dev f1 (76.50) is within 2 points of the majority-class baseline (75.00): neither it nor its "
        "student has shown that it learned the task")
    assert baseline_warning(mrpc, {"f1": 86.9, "accuracy": 80.0}, b) is None
    assert baseline_warning(mrpc, {"f1": 74.0, "accuracy": 70.0}, b, who="student") == (
        "the student's dev f1 (74.00) is below the majority-class baseline (75.00): it has not shown that it learned "
        "the task")
    assert baseline_warning(mrpc, {"f1": 77.0, "accuracy": 70.0}, b, who="student") is None  # 2 points above
    stsb = get_task("stsb")
    r = majority_baseline(stsb, np.array([1.0, 3.0]), np.array([0.0, 5.0, 2.0]))
    assert r == {"pearson": 0.0, "spearman": 0.0}
    assert baseline_warning(stsb, {"pearson": 1.5, "spearman": 1.0}, r) == (  # the mean score, not a class
        "the teacher's dev pearson (1.50) is within 2 points of the mean-score baseline (0.00): neither it nor its "
        "student has shown that it learned the task")
