"""Variational autoencoder of images (`vae`, MODELS.md section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from torch import nn

from inference.library import DataRef, LibraryPrediction, Problem
from inference.loglik import LogLik
from inference.models.bnn import data_plate, forked_rng
from kiln.library.digits import batch_indices, load_images, steps_per_epoch

__all__ = ["VAE", "VAE_MODEL", "Decoder", "Encoder", "VaeModel"]

MAX_IMAGES = 64  # test images reconstructed, and images decoded from the prior, by predict
PREDICT_PARTICLES = 10  # ELBO particles for predict's test_elbo (evaluate uses one)
NO_LOGLIK = (
    "vae stores no pointwise log-likelihood: its latent codes are local (one per image,"
    " amortised by the encoder), so log p(image | its own code) is not the held-out density"
    " PSIS-LOO compares; compare VAEs by their test_elbo metric instead"
)


class Encoder(nn.Module):
    """x (rows, pixels) -> the loc and scale of q(z | x): Linear -> softplus -> two heads."""

    def __init__(self, inputs: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = nn.functional.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    """z (rows, latent) -> pixel probabilities: Linear -> softplus -> Linear -> sigmoid."""

    def __init__(self, latent: int, hidden: int, inputs: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent, hidden)
        self.fc2 = nn.Linear(hidden, inputs)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc2(nn.functional.softplus(self.fc1(z)))
        return logits

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class VAE:
    """Model and guide: z ~ Normal(0, I) per image, x ~ Bernoulli(decoder(z)) over its pixels,
    and q(z | x) = Normal(encoder(x)); both in the plate `data`.

    Call model and guide as (x, idx=None): x (rows, pixels) in [0, 1]; idx the rows' indices
    in the training set of `size` images when x is a mini-batch.
    """

    def __init__(
        self, inputs: int, hidden: int, latent: int, size: int,
        device: str | torch.device = "cpu", likelihood: str = "bernoulli",
    ) -> None:  # fmt: skip
        self.likelihood = likelihood
        self.encoder = Encoder(inputs, hidden, latent).to(device)
        self.decoder = Decoder(latent, hidden, inputs).to(device)
        self.latent = latent
        self.size = size

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        # update_module_params: after a checkpoint or fitted state is loaded into the param
        # store, the network computes with the stored weights, not with its fresh ones.
        pyro.module("decoder", self.decoder, update_module_params=True)
        with data_plate(x, idx, self.size):
            loc = x.new_zeros((x.shape[0], self.latent))
            z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            return pyro.sample("x", self.pixels(z).to_event(1), obs=self.observed(x))

    def pixels(self, z: torch.Tensor) -> dist.TorchDistribution:
        logits = self.decoder.logits(z)
        if self.likelihood == "continuous_bernoulli":
            # Its normaliser is unstable at extreme logits; +-15 is a pixel of 3e-7 or 1-3e-7.
            pixels = dist.ContinuousBernoulli(logits=logits.clamp(-15.0, 15.0))
        else:
            # Grey levels in [0, 1] are not Bernoulli's {0, 1}: its log-density still applies
            # (cross-entropy), so skip the support check.
            pixels = dist.Bernoulli(logits=logits, validate_args=False)
        return cast(dist.TorchDistribution, pixels)  # Pyro's distribution classes type as Any

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "continuous_bernoulli":
            return x.clamp(1e-4, 1.0 - 1e-4)  # its support is the open interval
        return x

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """The expected image of code z (for Bernoulli pixels: the decoder's output)."""
        return self.pixels(z).mean

    def guide(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module("encoder", self.encoder, update_module_params=True)
        with data_plate(x, idx, self.size):
            loc, scale = self.encoder(x)
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decoder(encoder loc): each image through its most likely code."""
        loc, _ = self.encoder(x)
        return self.image(loc)

    def test_elbo(self, x: torch.Tensor, particles: int = 1) -> float:
        """The negative ELBO per image of `x` (no mini-batch scaling)."""
        loss = pyro.infer.Trace_ELBO(num_particles=particles).loss(self.model, self.guide, x)
        return float(loss) / x.shape[0]


class VaeModel:
    """The `vae` library model (inference.library.LibraryModel).

    Options (kiln.library.digits card): latent, hidden, epochs, batch_size, lr, test_every,
    likelihood (bernoulli as in the Pyro example, or continuous_bernoulli).
    latent_sites is empty: the only latent `z` is one code per image, not a parameter.
    """

    name = "vae"

    def prepare(
        self, options: Mapping[str, Any], data: DataRef, *, seed: int, device: str
    ) -> Problem:
        """Clear the param store, seed, load and split the images, build model, guide, batches."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        x_train, _, x_test, _, facts = load_images(data, seed)
        size, batch_size = len(x_train), int(options["batch_size"])
        test_every = int(options["test_every"])
        epochs = int(options["epochs"])
        xs = torch.as_tensor(x_train, device=device)
        x_eval = torch.as_tensor(x_test, device=device)
        vae = VAE(xs.shape[1], int(options["hidden"]), int(options["latent"]), size, device,
                  str(options.get("likelihood", "bernoulli")))  # fmt: skip
        evaluated = [0]  # epochs seen by evaluate() when the runner does not say which

        def batch(step: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
            rows = torch.tensor(batch_indices(seed, step, size, batch_size), device=device)
            return (xs[rows], rows), {}

        def evaluate(epoch: int | None = None) -> dict[str, float]:
            """The test ELBO per image every `test_every` epochs (and after the last)."""
            evaluated[0] = epoch if epoch is not None else evaluated[0] + 1
            if evaluated[0] % test_every and evaluated[0] != epochs:
                return {}
            with forked_rng(device), torch.no_grad():
                torch.manual_seed(seed)
                return {"test_elbo": vae.test_elbo(x_eval)}

        return Problem(
            model=vae.model,
            guide=vae.guide,
            batch=batch,
            steps_per_epoch=steps_per_epoch(size, batch_size),
            epochs=epochs,
            loss_items=size,
            evaluate=evaluate,
            latent_sites=(),
            device=device,
            info={**facts, "batch_size": batch_size},
            extra={"vae": vae, "x_test": x_eval},
        )

    def predict(self, problem: Problem, *, num_samples: int, seed: int) -> LibraryPrediction:
        """Reconstructions of up to 64 test images, up to min(64, num_samples) images decoded
        from the prior, and the test ELBO per image."""
        vae: VAE = problem.extra["vae"]
        x = problem.extra["x_test"]
        shown = x[:MAX_IMAGES]
        drawn = min(MAX_IMAGES, num_samples)
        # The fitted weights from the param store (a predict job loads them into a fresh
        # process before calling this).
        pyro.module("encoder", vae.encoder, update_module_params=True)
        pyro.module("decoder", vae.decoder, update_module_params=True)
        with forked_rng(problem.device), torch.no_grad():
            torch.manual_seed(seed)
            reconstruction = vae.reconstruct(shown)
            z = torch.randn(drawn, vae.latent, device=x.device)
            samples = vae.image(z)
            test_elbo = vae.test_elbo(x, particles=PREDICT_PARTICLES)
        sites = {
            "reconstruction": ("predictive", reconstruction.unsqueeze(0)),
            "__x__": ("data", shown.unsqueeze(0)),
            "samples": ("predictive", samples.unsqueeze(0)),
        }
        return LibraryPrediction(
            sites={name: (kind, value.cpu().numpy()) for name, (kind, value) in sites.items()},
            metrics={"test_elbo": test_elbo},
            info={
                "image_shape": problem.info.get("image_shape"),
                "reconstructed": len(shown),
                "sampled": drawn,
                "test": len(x),
                "elbo_particles": PREDICT_PARTICLES,
            },
            log_lik=LogLik(note=NO_LOGLIK),  # as its fit: the latent codes are per image
        )

    def log_likelihood(
        self, problem: Problem, draws: Mapping[str, NDArray[Any]], *, num_samples: int,
        seed: int,
    ) -> LogLik:  # fmt: skip
        """None, and why (NO_LOGLIK): `compare` names it when asked to rank a VAE."""
        return LogLik(note=NO_LOGLIK)


VAE_MODEL = VaeModel()
