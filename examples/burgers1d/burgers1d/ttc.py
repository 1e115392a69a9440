"""Rollouts in latent space: operator only, operator + corrector, and test-time compute (TTC).

TTC (reward-guided inference-time scaling): at every step, K candidate next states come from the
operator plus K corrector samples (different noise, optional extra latent noise); every candidate
is decoded to physical space and scored by :class:`~burgers1d.reward.BurgersReward`. A beam
search (width B) looks ``horizon`` steps ahead, re-proposing K candidates from every kept state;
the first step of the best path is committed (receding horizon) and the search restarts from
there. All of it is batched over trajectories.

The steady prior enters the score when ``w_prior`` > 0: it predicts the final latent from
every candidate and the time left, and candidates whose predicted end point disagrees with the
prior's prediction from the initial state are penalised (``prior_score``; the evaluator reports
TTC with and without it). The equal-compute controls live here too: :func:`mean_rollout`
(average of the candidates, no reward), :func:`pick_rollout` (a random candidate) and greedy
search (:func:`ttc_rollout` with horizon 1 and as many candidates as TTC draws per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .corrector import condition
from .diffusion import DenoiserConfig, consistency_sample
from .latent_operator import LatentOperator
from .reward import BurgersReward


@dataclass(frozen=True)
class TTCConfig:
    """Search settings (the seed: 6 candidates, beam 2, horizon 2)."""

    candidates: int = 6
    beam_width: int = 2
    horizon: int = 2
    gamma: float = 1.0
    include_operator: bool = True  # the uncorrected operator step is one of the K candidates
    latent_noise: float = 0.0  # extra N(0, s^2) noise on corrector candidates (normalised units)
    w_prior: float = 0.0  # weight of the steady-prior consistency term in the score

    @property
    def proposals_per_step(self) -> int:
        """Candidates TTC draws per committed step: K, plus B*K per extra horizon step."""
        return self.candidates * (1 + (self.horizon - 1) * self.beam_width)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> TTCConfig:
        raw = dict(raw or {})
        return cls(**{k: raw[k] for k in asdict(cls()) if k in raw})


class Proposer:
    """Candidate next latents from the operator and the distilled corrector."""

    def __init__(
        self,
        operator: LatentOperator,
        student: torch.nn.Module,
        mcfg: DenoiserConfig,
        r_std: torch.Tensor,
        sigmas: Sequence[float],
        generator: torch.Generator,
    ) -> None:
        self.operator, self.student, self.mcfg = operator, student, mcfg
        self.r_std, self.sigmas, self.gen = r_std, list(sigmas), generator

    def _noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.gen.device).to(device)

    @torch.no_grad()
    def corrected(self, z: torch.Tensor, k: int, latent_noise: float = 0.0) -> torch.Tensor:
        """``k`` corrector samples per state: [M, C, L] -> [M, k, C, L]."""
        z_op, cond = condition(self.operator, z)
        zk = z_op.repeat_interleave(k, 0)
        condk = cond.repeat_interleave(k, 0)
        noises = [self._noise(zk.shape, z.device) for _ in self.sigmas]
        r = consistency_sample(self.student, condk, noises, self.sigmas, self.mcfg)
        out = zk + r * self.r_std[:, None]
        if latent_noise > 0:
            out = out + latent_noise * self._noise(out.shape, z.device)
        return out.view(z.shape[0], k, *z.shape[1:])

    @torch.no_grad()
    def propose(self, z: torch.Tensor, cfg: TTCConfig) -> torch.Tensor:
        """K candidates per state: [M, C, L] -> [M, K, C, L]."""
        if not cfg.include_operator:
            return self.corrected(z, cfg.candidates, cfg.latent_noise)
        z_op = self.operator(z).float().unsqueeze(1)
        if cfg.candidates == 1:
            return z_op
        return torch.cat([z_op, self.corrected(z, cfg.candidates - 1, cfg.latent_noise)], dim=1)


Decode = Callable[[torch.Tensor], torch.Tensor]  # normalised latents [M, C, L] -> u [M, X]
# (candidates [N, J, C, L], index of the time they land on) -> score added per candidate [N, J]
PriorScore = Callable[[torch.Tensor, int], torch.Tensor]
# (step t, decoded candidates [N, K, X], rewards [N, K], committed index [N]) -> None
Observer = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def rollout(
    step: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, steps: int
) -> torch.Tensor:
    """Autoregressive rollout: [N, C, L] -> [N, steps, C, L]."""
    out, z = [], z0
    for _ in range(steps):
        z = step(z)
        out.append(z)
    return torch.stack(out, dim=1)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [N, K, ...] gathered at idx [N, J] -> [N, J, ...]."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


@torch.no_grad()
def ttc_rollout(
    proposer: Proposer,
    decode: Decode,
    reward: BurgersReward,
    z0: torch.Tensor,
    steps: int,
    cfg: TTCConfig,
    prior_score: PriorScore | None = None,
    observer: Observer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam-searched rollout; returns (latents [N, steps, C, L], committed rewards [N, steps]).
    ``prior_score`` (used when ``cfg.w_prior`` > 0) adds w_prior * score to every candidate;
    ``observer`` sees each step's first-level candidates, rewards and the committed index."""
    n, k = z0.shape[0], cfg.candidates
    z, u = z0, decode(z0)
    out, rewards = [], []
    use_prior = prior_score is not None and cfg.w_prior > 0

    def prior(states: torch.Tensor, t_next: int) -> torch.Tensor:
        return cfg.w_prior * prior_score(states, t_next) if use_prior else 0.0  # type: ignore[misc]

    for t in range(steps):
        horizon = min(cfg.horizon, steps - t)
        first = proposer.propose(z, cfg)  # [N, K, C, L]
        u_first = decode(first.flatten(0, 1)).view(n, k, -1)
        r_first = reward(u.repeat_interleave(k, 0), u_first.flatten(0, 1)).view(n, k)
        score, states, u_states = r_first + prior(first, t + 1), first, u_first
        root = torch.arange(k, device=z.device).expand(n, k)
        for h in range(1, horizon):
            keep = score.topk(min(cfg.beam_width, score.shape[1]), dim=1).indices  # [N, B]
            states, u_states = _take(states, keep), _take(u_states, keep)
            score, root = score.gather(1, keep), root.gather(1, keep)
            b = keep.shape[1]
            nxt = proposer.propose(states.flatten(0, 1), cfg)  # [N*B, K, C, L]
            u_nxt = decode(nxt.flatten(0, 1)).view(n, b, k, -1)
            r = reward(u_states.flatten(0, 1).repeat_interleave(k, 0), u_nxt.flatten(0, 2)).view(
                n, b, k
            )
            states = nxt.view(n, b * k, *z.shape[1:])
            r = r.view(n, b * k) + prior(states, t + 1 + h)
            score = (score.view(n, b, 1) + cfg.gamma**h * r.view(n, b, k)).view(n, b * k)
            u_states = u_nxt.view(n, b * k, -1)
            root = root[:, :, None].expand(n, b, k).reshape(n, b * k)
        best_root = root.gather(1, score.argmax(dim=1, keepdim=True))  # [N, 1]
        if observer is not None:
            observer(t, u_first, r_first, best_root[:, 0])
        z = _take(first, best_root)[:, 0]
        u = _take(u_first, best_root)[:, 0]
        rewards.append(r_first.gather(1, best_root)[:, 0])
        out.append(z)
    return torch.stack(out, dim=1), torch.stack(rewards, dim=1)


@torch.no_grad()
def mean_rollout(proposer: Proposer, z0: torch.Tensor, steps: int, k: int) -> torch.Tensor:
    """Control: each step commits the mean of ``k`` corrector samples (no reward)."""
    return rollout(lambda z: proposer.corrected(z, k).mean(dim=1), z0, steps)


@torch.no_grad()
def pick_rollout(
    proposer: Proposer, z0: torch.Tensor, steps: int, cfg: TTCConfig, generator: torch.Generator
) -> torch.Tensor:
    """Control: each step commits a uniformly random one of TTC's K candidates (no reward)."""

    def step(z: torch.Tensor) -> torch.Tensor:
        cands = proposer.propose(z, cfg)
        idx = torch.randint(cands.shape[1], (z.shape[0], 1), generator=generator)
        return _take(cands, idx.to(z.device))[:, 0]

    return rollout(step, z0, steps)
