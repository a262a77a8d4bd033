"""What each model trains on and its loss: autoencoder, latent denoiser, severity encoder.

Why one class per model with the same small surface (`module`, `model`, `inputs`, `save`):
the training loop (`pipeline.training.loop.fit`) and its data-parallel wrapper stay identical for
all three. `module` is an nn.Module whose forward returns the loss dict, so DDP sees every
trainable parameter through one forward call; frozen parts (the autoencoder under the
denoiser and the severity encoder) are held outside it and never receive gradients.

Random draws (posterior noise, timesteps, ε, severities, operator seeds, measurement noise)
are made for the whole global batch from `step_generator(seed, step, purpose)` or from
per-sample generators keyed by (step, global row), then sliced to the rank's rows: the result
is independent of process history and of the number of workers.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DModel, VQModel
from torch import nn

from pipeline.models.latent import Autoencoder, LatentDiffusion
from pipeline.models.model_store import load_model, model_fingerprint, save_latent_diffusion, save_model
from pipeline.models.severity import SeverityEncoder, severity_loss
from pipeline.models.space_to_depth_autoencoder import SpaceToDepthAutoencoder
from pipeline.operators import OPERATORS, build_operator, measure, to_model_domain
from pipeline.quality.no_reference import sigma2_quantiles
from pipeline.sampling.schedules import NoiseSchedule
from pipeline.sampling.seeding import DEGRADATION, sample_generator, sample_seed
from pipeline.training.data import gather, step_generator


def _seeded(seed: int, build):
    """Build a model with weights drawn from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _rows(t: torch.Tensor, rows: slice, device) -> torch.Tensor:
    return t[rows].to(device)


# ------------------------------------------------------------------ autoencoder

def build_autoencoder(cfg: dict, image_size: int, seed: int) -> nn.Module:
    """From the `model` section: kind s2d (SpaceToDepthAutoencoder, f = 2^levels), or a diffusers
    AutoencoderKL (kl) or VQModel (vq), f = 2^(levels−1)."""
    if cfg["kind"] == "s2d":
        return _seeded(seed, lambda: SpaceToDepthAutoencoder(
            block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=tuple(cfg["stage_layers"]),
            latent_channels=cfg["latent_channels"], norm_num_groups=cfg["norm_num_groups"], sample_size=image_size))
    levels = len(cfg["block_out_channels"])
    common = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels,
                  block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
                  latent_channels=cfg["latent_channels"], norm_num_groups=cfg["norm_num_groups"],
                  sample_size=image_size, scaling_factor=1.0)
    if cfg["kind"] == "kl":
        return _seeded(seed, lambda: AutoencoderKL(**common))
    if cfg["kind"] == "vq":
        return _seeded(seed, lambda: VQModel(num_vq_embeddings=cfg["num_vq_embeddings"], **common))
    raise ValueError(f"model.kind must be 's2d', 'kl' or 'vq', got {cfg['kind']!r}")


class _AutoencoderLoss(nn.Module):
    def __init__(self, model: nn.Module, weights: dict):
        super().__init__()
        self.model, self.w = model, weights

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        if Autoencoder(self.model).kind == "kl":
            post = self.model.encode(x).latent_dist
            rec = self.model.decode(post.mean + post.std * eps.to(post.mean.dtype)).sample
            reg = post.kl().float().mean()           # summed over latent entries, mean over the batch
            w_reg = self.w["kl"]
        else:
            out = self.model.decode(self.model.encode(x).latents)
            rec, reg, w_reg = out.sample, out.commit_loss.float().mean(), self.w["vq"]
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        total = self.w["l1"] * l1 + self.w["mse"] * mse + w_reg * reg
        return {"loss": total, "l1": l1, "mse": mse, "reg": reg}


class AutoencoderTask:
    """L1 + w·MSE + small KL (or VQ codebook/commitment) on clean crops in [−1,1]."""

    kind = "autoencoder"

    def __init__(self, images: torch.Tensor, model_cfg: dict, loss_cfg: dict, seed: int):
        self.images, self.seed, self.loss_cfg = images, seed, loss_cfg
        self.model = build_autoencoder(model_cfg, images.shape[-1], sample_seed_int(seed, "init-autoencoder"))
        self.module = _AutoencoderLoss(self.model, loss_cfg)
        factor = Autoencoder(self.model).downsample
        self.latent_shape = (model_cfg["latent_channels"], images.shape[-1] // factor)
        self.latent_scale: float | None = None

    def inputs(self, step: int, index: torch.Tensor, flip: torch.Tensor, rows: slice, device) -> dict:
        c, h = self.latent_shape
        eps = torch.randn((len(index), c, h, h), generator=step_generator(self.seed, step, "posterior"))
        x = gather(self.images, index[rows], flip[rows]) * 2.0 - 1.0
        return {"x": x.to(device), "eps": _rows(eps, rows, device)}

    @torch.no_grad()
    def compute_latent_scale(self, model: nn.Module, device, max_items: int, batch: int = 128) -> float:
        """1/std of E0(x) over the first `max_items` training crops (LDM's scale_factor), with `model`."""
        ae = Autoencoder(model.eval(), 1.0)
        zs = []
        for i in range(0, min(max_items, len(self.images)), batch):
            x = self.images[i:min(i + batch, max_items)].float().div(255.0).mul(2).sub(1).to(device)
            zs.append(ae.encode_unscaled(x).float().cpu())
        std = torch.cat(zs).std().item()
        if not std > 0:
            raise ValueError(f"latent std is {std}: the autoencoder collapsed; cannot set a latent scale")
        self.latent_scale = 1.0 / std
        return self.latent_scale

    def save(self, model: nn.Module, url: str, extra: dict) -> str:
        kind = Autoencoder(model).kind
        return save_model(model, url, extra={"role": "autoencoder", "kind": kind,
                                             "latent_scale": self.latent_scale, **extra})


# ------------------------------------------------------------------ latent denoiser

def build_unet(cfg: dict, channels: int, latent_size: int, seed: int) -> nn.Module:
    """UNet2DModel with attention at the latent resolutions listed in `attention_resolutions`."""
    res = [latent_size // 2 ** i for i in range(len(cfg["block_out_channels"]))]
    attn = [r in set(cfg["attention_resolutions"]) for r in res]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return _seeded(seed, lambda: UNet2DModel(
        sample_size=latent_size, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
        down_block_types=down, up_block_types=up, norm_num_groups=cfg["norm_num_groups"],
        attention_head_dim=cfg["attention_head_dim"]))


class _DenoiserLoss(nn.Module):
    def __init__(self, unet: nn.Module, schedule: NoiseSchedule, prediction: str):
        super().__init__()
        self.unet, self.schedule, self.prediction = unet, schedule, prediction

    def forward(self, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        zt = self.schedule.add_noise(z0, t, eps)
        target = eps
        if self.prediction == "v_prediction":  # v = √ᾱ·ε − √(1−ᾱ)·z0
            a = self.schedule.alpha_bar(t, z0)
            target = a.sqrt() * eps - (1.0 - a).sqrt() * z0
        mse = (self.unet(zt, t).sample.float() - target).pow(2).mean()
        return {"loss": mse, "mse": mse}


class DenoiserTask:
    """ε- or v-prediction MSE on scaled latents scale·E0(x) (precomputed once, also for flipped crops)."""

    kind = "ldm"

    def __init__(self, images: torch.Tensor, ae: Autoencoder, model_cfg: dict, seed: int, device,
                 hflip: bool = True):
        self.ae, self.seed = ae, seed
        self.schedule = NoiseSchedule.ldm_linear(int(model_cfg["num_timesteps"]))
        self.prediction = model_cfg.get("prediction_type", "epsilon")
        self.latents = self._encode(images, device)
        self.latents_flipped = self._encode(images.flip(-1), device) if hflip else self.latents
        c, h = self.latents.shape[1], self.latents.shape[-1]
        self.model = build_unet(model_cfg, c, h, sample_seed_int(seed, "init-unet"))
        self.module = _DenoiserLoss(self.model, self.schedule, self.prediction)

    @torch.no_grad()
    def _encode(self, images: torch.Tensor, device, batch: int = 128) -> torch.Tensor:
        out = [self.ae.encode(images[i:i + batch].float().div(255.0).mul(2).sub(1).to(device)).float().cpu()
               for i in range(0, len(images), batch)]
        return torch.cat(out)

    def inputs(self, step: int, index: torch.Tensor, flip: torch.Tensor, rows: slice, device) -> dict:
        b = len(index)
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=step_generator(self.seed, step, "timestep"))
        eps = torch.randn((b, *self.latents.shape[1:]), generator=step_generator(self.seed, step, "eps"))
        z0 = torch.where(flip.view(-1, 1, 1, 1), self.latents_flipped[index], self.latents[index])
        return {"z0": _rows(z0, rows, device), "t": _rows(t, rows, device), "eps": _rows(eps, rows, device)}

    def save(self, model: nn.Module, url: str, extra: dict) -> dict:
        """UNet at `url`, its autoencoder at `url/autoencoder` (load_latent_diffusion reads both)."""
        ldm = LatentDiffusion(self.ae, model, self.schedule, self.prediction)
        return save_latent_diffusion(ldm, url.rstrip("/") + "/autoencoder", url)


# ------------------------------------------------------------------ severity encoder

class _SeverityLoss(nn.Module):
    def __init__(self, encoder: nn.Module, ae: Autoencoder, loss_cfg: dict):
        super().__init__()
        self.encoder, self.cfg = encoder, loss_cfg
        self._frozen = (ae,)  # a tuple keeps the frozen autoencoder out of the module's parameters

    def forward(self, y: torch.Tensor, z0: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_hat, log_var = self.encoder.heads(y)
        lam_img = float(self.cfg["lambda_img"])
        out = severity_loss(z_hat.float(), log_var.float(), z0, lambda_sigma=float(self.cfg["lambda_sigma"]),
                            lambda_img=lam_img, x=x, decode=self._frozen[0].decode if lam_img else None,
                            variance_loss=self.cfg["variance_loss"], couple_variance=bool(self.cfg["couple_variance"]),
                            pair_weight=float(self.cfg["pair_weight"]))
        return {"loss": out["total"], "latent": out["latent"], "variance": out["variance"],
                "pair": out["pair"], "image": out["image"], "sigma2": out["sigma2"]}


class SeverityTask:
    """Fine-tune a copy of E0 on degraded crops: t ~ U[0,1] per sample, y = A_t(x) + n (method §2),
    n at the job's noise_sigma, or at σ ~ U[noise_sigma, noise_sigma_max] per sample when the test
    noise is unknown (an encoder trained at one σ reads more noise as less blur; what a range buys
    is measured in docs/model-design.md, "Unknown test noise").

    With `loss.pair_weight` > 0 each batch is same-crop pairs (rows 2k, 2k+1: one crop, one
    flip, two independent severities) for the loss's paired-difference term. `init` starts from
    a trained severity encoder instead of E0; `loss.freeze_mean` then retrains its head only, from
    scratch with `loss.reset_head`."""

    kind = "severity"

    def __init__(self, images: torch.Tensor, ae: Autoencoder, operator: str, noise_sigma: float,
                 operator_params: dict, loss_cfg: dict, seed: int, init: str | None = None,
                 noise_sigma_max: float | None = None):
        if operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; choose one of {sorted(OPERATORS)}")
        self.images, self.ae, self.seed = images, ae, seed
        self.operator, self.noise_sigma, self.operator_params = operator, float(noise_sigma), dict(operator_params)
        self.noise_sigma_max = None if noise_sigma_max is None else float(noise_sigma_max)
        OPERATORS[operator].params_for(0.5, self.noise_sigma, 0, **self.operator_params)  # fail fast on bad params
        self.model = _seeded(sample_seed_int(seed, "init-severity"), lambda: SeverityEncoder.from_autoencoder(
            ae, int(loss_cfg["head_channels"]), float(loss_cfg["init_sigma2"]), int(loss_cfg.get("head_bands", 0))))
        if init:
            state = load_severity_init(init, operator, ae, other_family=not loss_cfg["freeze_mean"]).state_dict()
            if loss_cfg.get("reset_head"):  # the mean head only; the (possibly other) variance head starts afresh
                state = {k: v for k, v in state.items() if not k.startswith("variance_head.")}
                state.update({f"variance_head.{k}": v for k, v in self.model.variance_head.state_dict().items()})
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"init {init} does not fit this encoder's architecture: {str(exc)[:300]}") from None
        if loss_cfg["freeze_mean"]:
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith("variance_head."))
        self.pairs = bool(loss_cfg["pair_weight"])
        self.module = _SeverityLoss(self.model, ae, loss_cfg)
        self.lr_scales = {"variance_head": float(loss_cfg["head_lr_scale"])}

    def inputs(self, step: int, index: torch.Tensor, flip: torch.Tensor, rows: slice, device) -> dict:
        b = len(index)
        t = torch.rand(b, generator=step_generator(self.seed, step, "severity"), dtype=torch.float64)
        op_seeds = torch.randint(0, 2 ** 31 - 1, (b,), generator=step_generator(self.seed, step, "operator-seed"))
        if self.pairs:  # one crop per two rows; the severities and noise stay independent
            index, flip = _paired(index, rows), _paired(flip, rows)
        rng = range(b)[rows]
        keys = [f"train-{step}-{i}" for i in rng]
        sigma = torch.full((b,), self.noise_sigma, dtype=torch.float64)
        if self.noise_sigma_max is not None:  # each row its own noise level, drawn like t
            u = torch.rand(b, generator=step_generator(self.seed, step, "noise-sigma"), dtype=torch.float64)
            sigma = self.noise_sigma + (self.noise_sigma_max - self.noise_sigma) * u
        params = [OPERATORS[self.operator].params_for(float(t[i]), float(sigma[i]), int(op_seeds[i]),
                                                      **self.operator_params) for i in rng]
        x01 = gather(self.images, index[rows], flip[rows]).to(device)
        with torch.no_grad():
            gens = [sample_generator(self.seed, k, DEGRADATION) for k in keys]
            y01 = measure(build_operator(params, keys), x01, gens)
            x = x01 * 2.0 - 1.0
            z0 = self.ae.encode(x).float()
        return {"y": to_model_domain(y01), "z0": z0, "x": x}

    def training_range(self, encoder: nn.Module, batch: int = 64, n_batches: int = 4) -> dict:
        """σ̂² quantiles on training measurements (fixed draws), for `severity_ood` at restore time."""
        device = next(encoder.parameters()).device
        index = torch.linspace(0, len(self.images) - 1, batch * n_batches).long()
        flip = torch.zeros(len(index), dtype=torch.bool)
        return sigma2_quantiles(encoder, lambda j: self.inputs(
            10 ** 9 + j, index[j * batch:(j + 1) * batch], flip[j * batch:(j + 1) * batch], slice(None), device
        )["y"], n_batches)

    def save(self, model: nn.Module, url: str, extra: dict) -> str:
        return save_model(model, url, extra={
            "sigma2_train": self.training_range(model),
            "role": "severity", "operator": self.operator, "noise_sigma": self.noise_sigma,
            "noise_sigma_max": self.noise_sigma_max,
            "operator_params": self.operator_params, "latent_scale": self.ae.scale,
            "autoencoder_fingerprint": model_fingerprint(self.ae.model), "autoencoder_kind": self.ae.kind, **extra})


def _paired(v: torch.Tensor, rows: slice) -> torch.Tensor:
    """`v` with this rank's rows replaced by their first half, each repeated twice (same-crop pairs)."""
    out, part = v.clone(), v[rows]
    if len(part) % 2:
        raise ValueError(f"same-crop pairs need an even number of rows per worker, got {len(part)}")
    out[rows] = part[: len(part) // 2].repeat_interleave(2)
    return out


def load_severity_init(url: str, operator: str, ae: Autoencoder, other_family: bool = False) -> nn.Module:
    """The severity encoder at `url`, checked to be for this autoencoder and for this family (fails fast).

    With `other_family` (both heads train) an encoder of another family may start the run: a new blur
    family learns from the Gaussian-blur encoder's features in a fraction of the steps from E0."""
    try:
        init, meta = load_model(url, return_meta=True)
    except (ValueError, OSError) as exc:
        raise ValueError(f"init {url}: {exc}") from None
    if meta.get("role") != "severity" or (meta.get("operator") != operator and not other_family):
        raise ValueError(f"init {url} is not a severity encoder for {operator!r} "
                         f"(role {meta.get('role')!r}, operator {meta.get('operator')!r}; another family's encoder "
                         f"may start a run that trains both heads, without loss.freeze_mean)")
    if meta.get("autoencoder_fingerprint") != model_fingerprint(ae.model):
        raise ValueError(f"init {url} was trained on another autoencoder than --autoencoder")
    return init


def sample_seed_int(seed: int, purpose: str) -> int:
    return sample_seed(seed, "train-init", purpose)
