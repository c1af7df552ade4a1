"""How the search scores architecture choices: running estimates of each choice's effect on the loss.

A single-path step runs one op per edge and cells 1..K, and measures the loss L_k of every depth k <= K (each
cell has its own readout). From these the estimator keeps

    G[k]     running mean of L_k - L_{k-1}, k >= 2            (paired: one batch, one path; the batch's own
                                                              difficulty cancels)
    D[k]     = sum_{j=2..k} G[j], D[1] = 0                    (depth k's loss relative to one cell)
    b[m]     running mean of l_t = mean_{k <= K} (L_k - D[k])  (the loss level, depth removed, over the steps
                                                              whose path was drawn as this one's: m = uniformly
                                                              or from the logits; a short window of
                                                              `level_window` such steps, to follow the training)
    A_t      = l_t - b[m_t]                                   (this step's advantage)
    O[e, o]  running mean of A_t over the steps where edge e ran op o
    s^2      running mean of A_t^2                            (the noise scale of one step)

Why a level per way of drawing: the logits' paths are better than uniform ones (SST-2, the final supernet of a
50k search: 0.209 against 0.260 mean loss, 0.64 noise units), so against one level for both every path drawn from
the logits counted as good and every uniform one as bad, whatever ops they ran; the op the logits favour, seen
mostly on their paths, then looked better than the ops seen mostly on uniform paths by more than any op's own
effect (+-0.3 noise units), and the search kept what it had first leaned to.

Running means are count-aware: the plain mean of the first `window` observations, then an exponential moving
average with rate 1 / window, so that early estimates of an untrained supernet are forgotten.
The architecture logits then descend the expected loss under their own distribution, in noise units:

    J(alpha, d) = sum_e sum_o softmax(alpha_e)_o O[e, o] / s + sum_k softmax(d)_k (D[k] - mean D) / s

i.e. a score-function estimator with per-choice baselines (REINFORCE with the expectation taken in closed form
over each choice's running mean). Unlike the straight-through Gumbel gradient, which sees one op per edge per
step and averages to noise, every op keeps an estimate between its samples, and depths are compared on the
same batch, so a deeper cell is neither favoured nor penalised by construction. Choices never observed count as
average (O = 0, G = 0).
"""

from __future__ import annotations

import torch

from adabert.nas.supernet import DROPPED


class ChoiceEstimates:
    def __init__(self, num_edges: int, num_ops: int, max_cells: int, window: int, level_window: int = 10) -> None:
        self.window = window
        self.level_window = level_window
        self.op = torch.zeros(num_edges, num_ops)
        self.op_n = torch.zeros(num_edges, num_ops)
        self.gain = torch.zeros(max_cells)  # gain[k - 1] = G[k]; gain[0] unused (0)
        self.gain_n = torch.zeros(max_cells)
        self.level = torch.zeros(2)  # [uniform, from the logits]
        self.level_n = torch.zeros(2)
        self.sq = torch.zeros(())
        self.sq_n = torch.zeros(())

    def _fold(self, mean: torch.Tensor, n: torch.Tensor, value: torch.Tensor, window: int | None = None) -> None:
        """In place: n += 1; mean += (value - mean) / min(n, window)."""
        n += 1
        mean += (value - mean) / torch.clamp(n, max=window or self.window)

    def depth_loss(self) -> torch.Tensor:
        """D [Kmax]: each depth's estimated loss relative to one cell."""
        return torch.cumsum(self.gain, 0)

    def update(self, op_index: list[int], depth_losses: torch.Tensor, uniform: bool) -> float:
        """Fold in one step: the op each edge ran (DROPPED edges are skipped), L_1..L_K [K], and whether the path
        was drawn uniformly (else from the logits). Returns A_t."""
        losses = depth_losses.detach().float().cpu()
        k = losses.shape[0]
        if k > 1:
            self._fold(self.gain[1:k], self.gain_n[1:k], losses[1:] - losses[:-1])
        level = (losses - self.depth_loss()[:k]).mean()
        m = 0 if uniform else 1
        adv = level - self.level[m] if self.level_n[m] > 0 else torch.zeros(())
        self._fold(self.level[m], self.level_n[m], level, self.level_window)
        for e, o in enumerate(op_index):
            if o != DROPPED:
                self._fold(self.op[e, o], self.op_n[e, o], adv)
        self._fold(self.sq, self.sq_n, adv * adv)
        return float(adv)

    def noise(self) -> float:
        return max(float(self.sq.sqrt()), 1e-6)

    def depth_scores(self) -> torch.Tensor:
        """D[k] - mean D [Kmax] in noise units."""
        d = self.depth_loss()
        return (d - d.mean()) / self.noise()

    def op_scores(self) -> torch.Tensor:
        """O[e, o] in noise units [E, n_ops] (unobserved: 0)."""
        return self.op / self.noise()

    def objective(self, alpha: torch.Tensor, depth_logits: torch.Tensor) -> torch.Tensor:
        """J above: differentiable in alpha [E, n_ops] and depth_logits [Kmax]."""
        o = self.op_scores().to(alpha.device)
        d = self.depth_scores().to(depth_logits.device)
        return (torch.softmax(alpha, -1) * o).sum() + (torch.softmax(depth_logits, -1) * d).sum()

    def report(self, ops: tuple[str, ...]) -> dict:
        """The estimates in noise units, for search_metrics.json: per edge {op: O / s}, per depth D / s."""
        o = self.op_scores()
        return {"noise": self.noise(), "observations_per_op": self.op_n.tolist(),
                "op_scores": [{op: round(float(v), 4) for op, v in zip(ops, row)} for row in o],
                "depth_scores": [round(float(v), 4) for v in self.depth_loss() / self.noise()]}

    def state(self) -> dict[str, torch.Tensor]:
        return {"op": self.op, "op_n": self.op_n, "gain": self.gain, "gain_n": self.gain_n, "level": self.level,
                "level_n": self.level_n, "sq": self.sq, "sq_n": self.sq_n}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            setattr(self, key, value.clone().float())
        if self.level.dim() == 0:  # a checkpoint written before the levels were kept per way of drawing
            self.level, self.level_n = self.level.repeat(2), self.level_n.repeat(2)
