"""Hostile options to `jobs submit`: non-finite and absurd numbers, sizes past their bounds,
steps past the cap, code where a name or a number belongs. Each is refused at submit with
exit 2 and one message naming it; nothing is written or queued, and no code runs.

Every case runs on SQLite + the embedded broker and on PostgreSQL + Redis (tests/security/
conftest.py: `target`).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RUGGED, RUGGED_FORMULA, SHARED
from tests.security.conftest import Target

ETH = str(SHARED / "ethusd_tweets.csv")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS, SCHOOLS_JSON = str(EXAMPLES / "eight_schools.py"), str(EXAMPLES / "eight_schools.json")
CODE = "__import__('os').system('touch {M}')"  # what each attack would run, were it evaluated
HUGE = str(10**100)

FIT = ("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula", RUGGED_FORMULA)
BNN = ("submit", "fit", "--model", "bnn-classifier", "--data", "digits")
VAE = ("submit", "fit", "--model", "vae", "--data", "digits")
FORECAST = ("submit", "fit", "--model", "forecast-bnn", "--data", ETH)
FORECAST_LINREG = ("submit", "fit", "--model", "forecast-linreg", "--data", ETH)
HMM = ("submit", "fit", "--model", "hmm", "--data", ETH)
OWN = ("submit", "fit", "--model", f"{SCHOOLS}:model", "--data", SCHOOLS_JSON)
NUTS = (*OWN, "--method", "nuts")
SWEEP = ("submit", "sweep", "--model", "linreg", "--data", str(RUGGED), "--formula",
         RUGGED_FORMULA)  # fmt: skip

# (id, arguments, what the message must say[, KILN_* settings for the case])
Case = tuple[str, tuple[str, ...], str] | tuple[str, tuple[str, ...], str, dict[str, str]]

FIT_OPTIONS: list[Case] = [
    ("lr-inf", (*FIT, "--lr", "inf"), "spec.lr: must be a finite number"),
    ("lr-nan", (*FIT, "--lr", "nan"), "spec.lr: must be a finite number"),
    ("lr-minus-inf", (*FIT, "--lr", "-inf"), "spec.lr: must be a finite number"),
    ("lr-1e400", (*FIT, "--lr", "1e400"), "spec.lr: must be a finite number (got inf)"),
    ("lr-past-float32", (*FIT, "--lr", "1e39"), "spec.lr: must be <= 1e+38"),
    ("lr-zero", (*FIT, "--lr", "0"), "spec.lr: must be > 0"),
    ("steps-past-cap", (*FIT, "--steps", "10000001"), "spec.steps: at most 10000000"),
    ("steps-100-digits", (*FIT, "--steps", HUGE), "(got a 101-digit number"),
    ("steps-past-64-bits", (*FIT, "--steps", str(2**63)), "spec.steps: at most 10000000"),
    ("steps-negative", (*FIT, "--steps", "-1"), "spec.steps: must be > 0"),
    ("num-samples-past-cap", (*FIT, "--num-samples", "100001"), "must be <= 100000"),
    ("seed-negative", (*FIT, "--seed", "-1"), "spec.seed: must be >= 0"),
    ("seed-past-32-bits", (*FIT, "--seed", str(2**32)), "spec.seed: must be < 4294967296"),
    ("seed-100-digits", (*FIT, "--seed", HUGE), "(got an integer of 333 bits)"),
    ("priority-10", (*FIT, "--priority", "10"), "spec.priority: must be <= 9"),
    ("checkpoint-every-past-bound", (*FIT, "--checkpoint-every", str(10**13)),
     "spec.checkpoint_every: must be <= 1000000000000"),
    ("checkpoint-every-s-inf", (*FIT, "--checkpoint-every-s", "inf"), "must be a finite number"),
    ("checkpoint-every-s-nan", (*FIT, "--checkpoint-every-s", "nan"), "must be a finite number"),
    ("checkpoint-every-s-negative", (*FIT, "--checkpoint-every-s", "-1"), "must be >= 0"),
    ("then-predict-past-cap", (*FIT, "--then-predict", "100001"),
     "spec.num_samples: at most 100000"),
    ("then-predict-100-digits", (*FIT, "--then-predict", HUGE), "a 101-digit number"),
    ("then-predict-values-past-cap", (*FIT, "--then-predict", "100"),
     "above the cap of 1000 (KILN_MAX_PREDICT_VALUES)", {"KILN_MAX_PREDICT_VALUES": "1000"}),
    ("guide-with-a-command", (*FIT, "--guide", "AutoNormal; touch {M}"), "built-in models take"),
    ("elbo-unknown", (*FIT, "--elbo", "evil"), "Invalid value for '--elbo'"),
    ("cuda-on-the-cpu-queue", (*FIT, "--device", "cuda", "--queue", "cpu"),
     "device cuda needs the gpu queue"),
    ("mcmc-of-a-built-in-model", (*FIT, "--method", "nuts"), "MCMC runs your own model files"),
    ("model-as-code", ("submit", "fit", "--model", CODE, "--data", str(RUGGED)),
     "not a built-in model"),
    ("model-file-elsewhere", ("submit", "fit", "--model", "../../../../etc/evil.py", "--data",
                              str(RUGGED)), "model file ../../../../etc/evil.py not found"),
    ("data-not-there", ("submit", "fit", "--model", "linreg", "--data", "/nonexistent/x.csv",
                        "--formula", RUGGED_FORMULA), "data file /nonexistent/x.csv not found"),
    ("data-past-the-dataset-cap", FIT, "the limit is 1000", {"KILN_MAX_DATASET_BYTES": "1000"}),
]  # fmt: skip

PRIORS: list[Case] = [
    ("scale-inf", (*FIT, "--prior", "rugged=normal(0,inf)"),
     "spec.priors.rugged.scale: must be a finite number"),
    ("loc-nan", (*FIT, "--prior", "rugged=normal(nan,1)"),
     "spec.priors.rugged.loc: must be a finite number"),
    ("scale-negative", (*FIT, "--prior", "rugged=normal(0,-1)"),
     "spec.priors.rugged.scale: must be > 0"),
    ("scale-zero", (*FIT, "--prior", "rugged=normal(0,0)"),
     "spec.priors.rugged.scale: must be > 0"),
    ("scale-underflows-float32", (*FIT, "--prior", "rugged=normal(0,1e-300)"),
     "scale must be at least 1e-30"),
    ("loc-past-float32", (*FIT, "--prior", "rugged=normal(1e39,1)"),
     "spec.priors.rugged.loc: must be <= 1e+38"),
    ("sigma-high-inf", (*FIT, "--prior", "sigma=uniform(0,inf)"),
     "spec.priors.sigma.high: must be a finite number"),
    ("sigma-reversed", (*FIT, "--prior", "sigma=uniform(5,1)"), "high must be above low"),
    ("sigma-below-zero", (*FIT, "--prior", "sigma=uniform(-1,1)"),
     "spec.priors.sigma.low: must be >= 0"),
    ("sigma-normal", (*FIT, "--prior", "sigma=normal(0,1)"), "prior for `sigma` must be uniform"),
    ("term-uniform", (*FIT, "--prior", "rugged=uniform(0,1)"), "prior for `rugged` must be normal"),
    ("unknown-distribution", (*FIT, "--prior", "rugged=cauchy(0,1)"),
     "write NAME=normal(LOC, SCALE)"),
    ("unknown-site", (*FIT, "--prior", "ruggd=normal(0,1)"), "prior for `ruggd`: no such site"),
    ("dunder-site", (*FIT, "--prior", "__class__=normal(0,1)"), "prior for `__class__`: no such"),
    ("code-as-a-parameter", (*FIT, "--prior", f"rugged=normal({CODE},1)"),
     "the parameters must be numbers"),
    ("100k-characters", (*FIT, "--prior", "rugged=normal(0," + "1" * 100_000 + ")"),
     "write NAME=normal(LOC, SCALE)"),
]  # fmt: skip

LIBRARY: list[Case] = [
    ("lr-inf", (*BNN, "--set", "lr=inf"), "spec.options.lr: must be a finite number"),
    ("lr-nan", (*VAE, "--set", "lr=nan"), "spec.options.lr: must be a finite number"),
    ("lr-1e400", (*FORECAST_LINREG, "--set", "lr=1e400"), "spec.options.lr: must be a finite"),
    ("lr-past-bound", (*FORECAST_LINREG, "--set", "lr=1e308"), "at most 1000 for `lr`"),
    ("lr-option-inf", (*HMM, "--lr", "inf"), "spec.options.lr: must be a finite number"),
    ("lr-zero", (*HMM, "--set", "lr=0"), "takes a number above 0"),
    ("hidden-1e11", (*BNN, "--set", "hidden=1e11"), "`bnn-classifier` wants int for `hidden`"),
    ("hidden-past-bound", (*BNN, "--set", "hidden=100000000000"), "takes 1 to 4096 for `hidden`"),
    ("hidden-100-digits", (*BNN, "--set", f"hidden={HUGE}"),
     "spec.options.hidden: must be an integer that fits 64 bits"),
    ("hidden-zero", (*BNN, "--set", "hidden=0"), "takes 1 to 4096 for `hidden`"),
    ("forecast-hidden-past-bound", (*FORECAST, "--set", "hidden=100000000000"),
     "`forecast-bnn` takes 1 to 4096 for `hidden`"),
    ("vae-hidden-past-bound", (*VAE, "--set", "hidden=1000000000"), "takes 1 to 4096"),
    ("latent-past-bound", (*VAE, "--set", "latent=100000000"), "takes 1 to 1024 for `latent`"),
    ("epochs-1e9", (*VAE, "--set", "epochs=1e9"), "`vae` wants int for `epochs`"),
    ("epochs-past-step-cap", (*BNN, "--set", "epochs=1000000"),
     "steps (epochs x batches per epoch): at most 10000000"),
    ("epochs-past-bound", (*BNN, "--set", "epochs=1000000000"), "takes 1 to 1000000"),
    ("batch-size-past-bound", (*BNN, "--set", "batch_size=100000000000"), "takes 1 to 65536"),
    ("test-every-past-bound", (*VAE, "--set", "test_every=100000000000"), "takes 1 to 1000000"),
    ("threshold-nan", (*BNN, "--set", "threshold=nan"), "spec.options.threshold: must be a finite"),
    ("threshold-past-log-10", (*BNN, "--set", "threshold=5"), "at most 2.30259 for `threshold`"),
    ("window-past-bound", (*FORECAST, "--set", "window=100000000000"), "takes 1 to 365"),
    ("holdout-past-bound", (*FORECAST_LINREG, "--set", "holdout=100000000000"),
     "takes 1 to 100000"),
    ("states-past-bound", (*HMM, "--set", "states=100000000000"), "takes 2 to 10 for `states`"),
    ("hmm-steps-past-cap", (*HMM, "--set", "steps=100000000000"), "at most 10000000"),
    ("column-as-code", (*HMM, "--set", f"column={CODE}"), "not in `ethusd_tweets.csv`"),
    ("column-100k-characters", (*HMM, "--set", "column=" + "x" * 100_000),
     "100007 characters; at most 320"),
    ("column-with-a-nul", (*HMM, "--set", "column=Close\x00; touch {M}"),
     "spec.options.column: must not hold control characters"),
    ("column-300-characters", (*HMM, "--set", "column=" + "x" * 300),
     "spec.options.column: must be at most 255 characters"),
    ("unknown-option", (*VAE, "--set", "latnet=3"), "`vae` has no option `latnet`"),
    ("option-without-a-value", (*BNN, "--set", "hidden"), "write KEY=VALUE"),
    ("option-without-a-key", (*BNN, "--set", "=5"), "write KEY=VALUE"),
    ("likelihood-unknown", (*VAE, "--set", "likelihood=gaussian"), "takes one of"),
    ("set-on-linreg", (*FIT, "--set", "hidden=2"), "--set is for library models"),
    ("formula-on-a-library-model", (*BNN, "--formula", "y ~ x"), "--formula does not apply"),
    ("prior-on-a-library-model", (*BNN, "--prior", "a=normal(0,1)"), "--prior does not apply"),
    ("steps-on-a-library-model", (*BNN, "--steps", "5"), "--steps does not apply"),
    ("data-of-the-wrong-kind", ("submit", "fit", "--model", "hmm", "--data", "digits"),
     "`hmm` takes --data FILE.csv"),
    ("num-samples-past-cap", (*VAE, "--num-samples", "1000000"),
     "spec.num_samples: must be <= 100000"),
]  # fmt: skip

OWN_MODEL: list[Case] = [
    ("lr-inf", (*OWN, "--lr", "inf"), "spec.lr: must be a finite number"),
    ("steps-past-cap", (*OWN, "--steps", "100000000"), "at most 10000000"),
    ("target-accept-nan", (*NUTS, "--target-accept", "nan"), "spec.target_accept: must be a"),
    ("target-accept-one", (*NUTS, "--target-accept", "1"), "spec.target_accept: must be < 1"),
    ("chains-65", (*NUTS, "--chains", "65"), "spec.chains: must be <= 64"),
    ("mcmc-on-cuda", (*NUTS, "--device", "cuda"), "MCMC samples on the CPU"),
    ("warmup-past-bound", (*NUTS, "--warmup", "1000001"), "spec.warmup: must be <= 1000000"),
    ("draws-past-step-cap", (*NUTS, "--chains", "64", "--warmup", "1000000", "--samples",
                            "1000000"), "128000000 steps"),
    ("leapfrog-steps-past-bound", (*OWN, "--method", "hmc", "--num-steps", "10001"),
     "spec.num_steps: must be <= 10000"),
    ("tree-depth-past-bound", (*NUTS, "--max-tree-depth", "21"), "must be <= 20"),
    ("function-as-code", ("submit", "fit", "--model", f"{SCHOOLS}:{CODE}", "--data",
                          SCHOOLS_JSON), "is not a function name"),
    ("guide-from-another-file", (*OWN, "--guide", "/etc/evil.py:guide"),
     "the guide function must be in the model's file"),
    ("model-file-past-cap", OWN, "the limit is 10", {"KILN_MAX_SOURCE_BYTES": "10"}),
]  # fmt: skip

SWEEPS: list[Case] = [
    ("grid-lr-inf", (*SWEEP, "--grid", "lr=0.01,inf"), "--grid lr=inf: spec.lr: must be a finite"),
    ("grid-lr-nan", (*SWEEP, "--grid", "lr=nan,0.01"), "--grid lr=nan: spec.lr: must be a finite"),
    ("grid-lr-past-float32", (*SWEEP, "--grid", "lr=0.01,1e39"), "spec.lr: must be <= 1e+38"),
    ("grid-steps-1e12", (*SWEEP, "--grid", "steps=10,1e12"), "--grid steps: at most 10000000"),
    ("grid-steps-1e400", (*SWEEP, "--grid", "steps=10,1e400"),
     "--grid steps=1e400: not a whole number"),
    ("grid-steps-fraction", (*SWEEP, "--grid", "steps=10,10.5"),
     "--grid steps=10.5: not a whole number"),
    ("grid-steps-nan", (*SWEEP, "--grid", "steps=10,nan"), "--grid steps=nan: not a whole number"),
    ("grid-steps-200-digits", (*SWEEP, "--grid", "steps=10," + "9" * 200),
     "--grid steps: at most 10000000 (got a 200-digit number"),
    ("grid-steps-zero", (*SWEEP, "--grid", "steps=10,0"), "spec.steps: must be > 0"),
    ("grid-num-samples-1e12", (*SWEEP, "--grid", "num_samples=10,1e12"),
     "spec.num_samples: must be <= 100000"),
    ("grid-prior-scale-inf", (*SWEEP, "--grid", "prior.rugged=normal(0,1),normal(0,inf)"),
     "spec.priors.rugged.scale: must be a finite number"),
    ("grid-prior-loc-nan", (*SWEEP, "--grid", "prior.rugged=normal(nan,1),normal(0,1)"),
     "spec.priors.rugged.loc: must be a finite number"),
    ("grid-prior-sigma-inf", (*SWEEP, "--grid", "prior.sigma=uniform(0,1),uniform(0,inf)"),
     "spec.priors.sigma.high: must be a finite number"),
    ("grid-prior-as-code", (*SWEEP, "--grid", f"prior.rugged=normal(0,1),{CODE}"),
     "write normal(LOC, SCALE)"),
    ("grid-guide-with-a-command", (*SWEEP, "--grid", "guide=AutoNormal,AutoNormal; touch {M}"),
     "--grid guide=AutoNormal; touch"),
    ("grid-lr-as-code", (*SWEEP, "--grid", f"lr=0.01,{CODE}"), "not a float"),
    ("grid-key-unknown", (*SWEEP, "--grid", "sigma=1,2"), "grid key `sigma` cannot be swept"),
    ("grid-key-dunder", (*SWEEP, "--grid", "__class__=1,2"), "`__class__` cannot be swept"),
    ("grid-key-100-characters", (*SWEEP, "--grid", "l" * 100 + "=1,2"),
     "String should have at most 64 characters"),
    ("grid-value-300-characters", (*SWEEP, "--grid", "guide=AutoNormal," + "A" * 300),
     "must be at most 255 characters"),
    ("members-past-cap", (*SWEEP, "--grid", "lr=0.01,0.02", "--seeds", "20000"),
     "the sweep has 40000 members; at most 20000"),
    ("seeds-past-bound", (*SWEEP, "--seeds", "100001"), "spec.seeds: must be <= 100000"),
    ("bootstrap-past-bound", (*SWEEP, "--bootstrap", HUGE), "spec.bootstrap: must be <= 100000"),
    ("batch-size-zero", (*SWEEP, "--seeds", "2", "--batch-size", "0"),
     "spec.batch_size: must be >= 1"),
    ("group-by-missing-column", (*SWEEP, "--group-by", CODE), "not in data"),
    ("group-by-300-characters", (*SWEEP, "--group-by", "g" * 300),
     "String should have at most 255 characters"),
    ("base-lr-inf", (*SWEEP, "--lr", "inf"), "spec.base.lr: must be a finite number"),
    ("base-prior-inf", (*SWEEP, "--prior", "rugged=normal(0,inf)"),
     "spec.base.priors.rugged.scale: must be a finite number"),
    ("base-steps-past-cap", (*SWEEP, "--steps", "100000000"), "spec.steps: at most 10000000"),
]  # fmt: skip


def _ids(cases: list[Case]) -> list[str]:
    return [case[0] for case in cases]


def _run(target: Target, monkeypatch: pytest.MonkeyPatch, case: Case) -> None:
    for key, value in (case[3] if len(case) == 4 else {}).items():
        monkeypatch.setenv(key, value)
    target.refuse(case[1], case[2])


@pytest.mark.parametrize("case", FIT_OPTIONS, ids=_ids(FIT_OPTIONS))
def test_a_hostile_fit_option_is_refused(
    target: Target, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    _run(target, monkeypatch, case)


@pytest.mark.parametrize("case", PRIORS, ids=_ids(PRIORS))
def test_a_hostile_prior_is_refused_with_one_message(
    target: Target, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    _run(target, monkeypatch, case)


@pytest.mark.parametrize("case", LIBRARY, ids=_ids(LIBRARY))
def test_a_hostile_library_option_is_refused_within_its_bounds(
    target: Target, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    _run(target, monkeypatch, case)


@pytest.mark.parametrize("case", OWN_MODEL, ids=_ids(OWN_MODEL))
def test_a_hostile_option_for_a_users_model_is_refused(
    target: Target, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    _run(target, monkeypatch, case)


@pytest.mark.parametrize("case", SWEEPS, ids=_ids(SWEEPS))
def test_a_sweep_with_one_bad_member_is_refused_at_submit(
    target: Target, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    _run(target, monkeypatch, case)


# --- MNIST folders: measured from their headers before anything is unpacked -----------------

IMAGES, LABELS = 0x00000803, 0x00000801


def _idx(magic: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in shape)


def _folder(root: Path, name: str, **files: bytes) -> str:
    """An MNIST folder of four gzipped IDX files: small valid ones, unless given."""
    folder = root / name
    folder.mkdir()
    n = 12
    plain = {
        "train-images-idx3-ubyte": _idx(IMAGES, (n, 28, 28)) + bytes(n * 784),
        "train-labels-idx1-ubyte": _idx(LABELS, (n,)) + bytes(range(n)),
        "t10k-images-idx3-ubyte": _idx(IMAGES, (4, 28, 28)) + bytes(4 * 784),
        "t10k-labels-idx1-ubyte": _idx(LABELS, (4,)) + bytes(4),
    }
    for key, content in {**plain, **{k.replace("_", "-"): v for k, v in files.items()}}.items():
        (folder / f"{key}.gz").write_bytes(gzip.compress(content, compresslevel=9))
    return str(folder)


def _bomb(count: int) -> bytes:
    """Images of zeros: gzip makes 1 MB of them about 1 KB."""
    return _idx(IMAGES, (count, 28, 28)) + bytes(count * 784)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("mnist")
    yield {
        "bomb": _folder(
            root,
            "bomb",
            train_images_idx3_ubyte=_bomb(25_000),
            train_labels_idx1_ubyte=_idx(LABELS, (25_000,)) + bytes(25_000),
        ),  # fmt: skip
        "claims-petabytes": _folder(
            root, "claims", train_images_idx3_ubyte=_idx(IMAGES, (2**31, 2**16, 2**16))
        ),
        "cut-short": _folder(root, "short", train_images_idx3_ubyte=_idx(IMAGES, (60_000, 28, 28))),
        "trailing-data": _folder(
            root, "trailing", t10k_labels_idx1_ubyte=_idx(LABELS, (4,)) + bytes(4_000_000)
        ),
        "bad-magic": _folder(root, "magic", train_labels_idx1_ubyte=_idx(IMAGES, (12, 1, 1))),
        "labels-past-9": _folder(
            root, "labels", train_labels_idx1_ubyte=_idx(LABELS, (12,)) + bytes([200] * 12)
        ),
        "count-mismatch": _folder(
            root, "counts", train_labels_idx1_ubyte=_idx(LABELS, (5,)) + bytes(5)
        ),
    }


MNIST: list[tuple[str, str, dict[str, str]]] = [
    ("bomb", "4000000 bytes left of the data set cap (KILN_MAX_DATASET_BYTES)",
     {"KILN_MAX_DATASET_BYTES": "4000000"}),
    ("claims-petabytes", "bytes left of the data set cap (KILN_MAX_DATASET_BYTES)", {}),
    ("cut-short", "is the file cut short?", {}),
    ("trailing-data", "more bytes of data", {}),
    ("bad-magic", "magic number 0x00000803, want 0x00000801", {}),
    ("labels-past-9", "must hold the classes 0..9", {}),
    ("count-mismatch", "5 labels for 12 images", {}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "named", "env"), MNIST, ids=[m[0] for m in MNIST])
def test_a_hostile_mnist_folder_is_refused_before_it_is_unpacked(
    target: Target, monkeypatch: pytest.MonkeyPatch, mnist: dict[str, str], name: str,
    named: str, env: dict[str, str],
) -> None:  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target.refuse(("submit", "fit", "--model", "bnn-classifier", "--data", mnist[name]), named)


def test_an_mnist_bomb_is_refused_without_being_unpacked(tmp_path: Path) -> None:
    """80 KB of gzip that unpacks to 78 MB, against a 16 MB cap: refused from the header's
    shape, while the reader has allocated a few kilobytes, not the 78 MB."""
    import tracemalloc
    import zlib

    from kiln.errors import DataError
    from kiln.library.digits import read_mnist_dir

    folder = Path(_folder(tmp_path, "bomb"))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # a gzip stream, written a MB at a time
    with open(folder / "train-images-idx3-ubyte.gz", "wb") as out:
        out.write(packer.compress(_idx(IMAGES, (100_000, 28, 28))))
        for _ in range(78):
            out.write(packer.compress(bytes(1_003_520)))
        out.write(packer.flush())
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="78400000 bytes unpacked.*16000000 bytes left"):
            read_mnist_dir(folder, max_bytes=16_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak
