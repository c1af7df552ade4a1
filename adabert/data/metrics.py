"""Task metrics on numpy arrays: accuracy, binary F1, Matthews correlation, Pearson and Spearman, and the
per-class report (precision, recall, F1, confusion counts)."""

from __future__ import annotations

import numpy as np

from adabert.data.tasks import TaskSpec


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else 0.0


def confusion(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C, C]: row = gold class, column = predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (gold.astype(np.int64), pred.astype(np.int64)), 1)
    return m


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (index 1): 2 tp / (2 tp + fp + fn)."""
    tp = float(((pred == 1) & (gold == 1)).sum())
    fp = float(((pred == 1) & (gold != 1)).sum())
    fn = float(((pred != 1) & (gold == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(pred: np.ndarray, gold: np.ndarray, num_classes: int = 2) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; equals the phi coefficient for 2 classes)."""
    c = confusion(pred, gold, num_classes).astype(np.float64)
    t, p, n, s = c.sum(1), c.sum(0), np.trace(c), c.sum()
    denom = np.sqrt(s * s - (p * p).sum()) * np.sqrt(s * s - (t * t).sum())
    return float((n * s - (t * p).sum()) / denom) if denom else 0.0


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    x, y = pred.astype(np.float64) - pred.mean(), gold.astype(np.float64) - gold.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, ranks)
    return (sums / counts)[inv]


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    return pearson(_ranks(pred), _ranks(gold))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)) over all pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denom) if denom else 0.0


def predictions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Class indices [N] from logits [N, C], or the scores [N] of a regression head [N, 1]."""
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def task_metrics(task: TaskSpec, logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """All of the task's metrics (in percent) from logits [N, C] and gold labels [N]."""
    pred = predictions(task, logits)
    return {m: metric(task, m, pred, gold) for m in task.metrics}


def metric(task: TaskSpec, name: str, pred: np.ndarray, gold: np.ndarray) -> float:
    """One metric (in percent) of predictions [N] (`predictions`) against gold labels [N]."""
    fns = {"accuracy": lambda: accuracy(pred, gold), "f1": lambda: f1_binary(pred, gold),
           "matthews": lambda: matthews(pred, gold, task.num_labels), "pearson": lambda: pearson(pred, gold),
           "spearman": lambda: spearman(pred, gold)}
    return 100.0 * fns[name]()


def paired_difference(task: TaskSpec, logits_a: np.ndarray, logits_b: np.ndarray, gold: np.ndarray,
                      draws: int = 500, seed: int = 0) -> tuple[float, float]:
    """How far model a leads model b on the task's main metric over the same N examples, and how sure that is:
    (m(a) - m(b), s.e.), both in percent, where the standard error is the std of m(a)[r] - m(b)[r] over `draws`
    paired bootstrap resamples r of the N rows (the same rows for both models, so the error both make on a row
    cancels). A lead under about 2 s.e. is within the sampling error of an evaluation of this size."""
    m, a, b = task.main_metric, predictions(task, logits_a), predictions(task, logits_b)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(gold), size=(draws, len(gold)))
    diffs = [metric(task, m, a[r], gold[r]) - metric(task, m, b[r], gold[r]) for r in rows]
    return metric(task, m, a, gold) - metric(task, m, b, gold), float(np.std(diffs))


def teacher_agreement(task: TaskSpec, student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Fidelity of a student to its teacher on the same examples [N, C], in percent: the share of examples whose
    predicted class is the teacher's, or for regression the Pearson correlation of the two scores. It says how
    much imitation is left whatever the gold labels say: a student that agrees with the teacher on 94% of dev
    still answers differently on 6% of it."""
    s, t = predictions(task, student_logits), predictions(task, teacher_logits)
    return 100.0 * (pearson(s, t) if task.is_regression else accuracy(s, t))


def agreement_measure(task: TaskSpec) -> str:
    """What `teacher_agreement` measures on this task, in words."""
    return "Pearson r with the teacher's scores (x100)" if task.is_regression else "% same label as the teacher"


def describe_dev(task: TaskSpec, metrics: dict) -> str:
    """One log line of a student's dev metrics, with its agreement with the teacher when measured."""
    line = ", ".join(f"{k} {v:.2f}" for k, v in metrics["dev"].items())
    if "dev_teacher_agreement" in metrics:
        line += f"; {agreement_measure(task)} {metrics['dev_teacher_agreement']:.2f}"
    return line


def majority_baseline(task: TaskSpec, train_labels: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The task's metrics of the predictor that ignores the text: the most frequent training class for every
    example (classification; ties go to the lower index), or the mean training score (regression, whose
    correlations are then 0)."""
    if task.is_regression:
        logits = np.full((len(gold), 1), float(np.mean(train_labels)) if len(train_labels) else 0.0)
    else:
        logits = np.zeros((len(gold), task.num_labels))
        logits[:, int(np.bincount(train_labels.astype(np.int64), minlength=task.num_labels).argmax())] = 1.0
    return task_metrics(task, logits, gold)


def baseline_name(task: TaskSpec) -> str:
    """What `majority_baseline` predicts, as reports name its baseline: "majority-class" or "mean-score"."""
    return "mean-score" if task.is_regression else "majority-class"


def baseline_warning(task: TaskSpec, scores: dict[str, float], baseline: dict[str, float], who: str = "teacher",
                     margin: float = 2.0) -> str | None:
    """A warning when the main metric of `who` (the teacher or the student) is below the majority baseline's or
    within `margin` points above it: then it has not shown that it learned the task, and for a teacher neither has
    a student distilled from it."""
    m = task.main_metric
    if scores[m] - baseline[m] >= margin:
        return None
    relation = "below" if scores[m] < baseline[m] else f"within {margin:g} points of"
    consequence = ("neither it nor its student has shown that it learned the task" if who == "teacher"
                   else "it has not shown that it learned the task")
    return (f"the {who}'s dev {m} ({scores[m]:.2f}) is {relation} the {baseline_name(task)} baseline "
            f"({baseline[m]:.2f}): {consequence}")


def class_report(task: TaskSpec, logits: np.ndarray, gold: np.ndarray) -> dict:
    """Per-class precision / recall / F1 / support (percent) and the confusion counts of a classification task."""
    pred = predictions(task, logits)
    c = confusion(pred, gold, task.num_labels)
    per_class = {}
    for i, name in enumerate(task.names):
        tp, fp, fn = c[i, i], c[:, i].sum() - c[i, i], c[i, :].sum() - c[i, i]
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_class[name] = {"precision": 100 * p, "recall": 100 * r,
                           "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0), "support": int(c[i].sum())}
    return {"per_class": per_class, "confusion": c.tolist(), "labels": list(task.names)}
