"""Plain, serialisable settings for a model and for a training run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .budget import check_epochs
from .errors import InputError


@dataclass(frozen=True)
class KindTraits:
    """What a model kind is made of; the one place that says so.

    ``pose``: it infers a rotation (and shift) per patch. ``class_input``: the
    class is an input of the encoder and the decoder (known for every patch,
    when training and when encoding). ``class_latent``: the class is a
    discrete latent with a classifier head. ``labels``: ``"all"`` (every
    patch needs a class to train), ``"some"`` (at least one), ``"none"``.
    """

    pose: bool
    class_input: bool = False
    class_latent: bool = False
    labels: str = "none"

    @property
    def class_model(self) -> bool:
        return self.class_input or self.class_latent

    @property
    def needs_labels(self) -> bool:
        return self.labels != "none"

    def n_classes(self, requested: int) -> int:
        """The class count a run asks for: 0 without a class; at least 2 where
        labels set it (``requested`` is then a floor)."""
        if not self.class_model:
            return 0
        return max(int(requested), 2) if self.needs_labels else int(requested)


KINDS = {
    "rvae": KindTraits(pose=True),
    "vae": KindTraits(pose=False),
    "crvae": KindTraits(pose=True, class_input=True, labels="all"),
    "jrvae": KindTraits(pose=True, class_latent=True),
    "ssrvae": KindTraits(pose=True, class_latent=True, labels="some"),
}
MODEL_KINDS = tuple(KINDS)
ALIGNMENTS = ("auto", "sync", "none")
ROTATION_RANGES = ("auto", "full", "limited")
LIKELIHOODS = ("gaussian", "bernoulli")
SYMMETRIES = (1, 2, 3, 4, 6)
SYMMETRY_AUTO = "auto"  # estimated from the patches when training starts (core/symmetry.py)


@dataclass(frozen=True)
class ModelConfig:
    """What the network looks like; stored inside every model file.

    ``kind``: ``vae`` (no pose latents), ``rvae`` (rotation, optional shift,
    content latents), ``crvae`` (rVAE whose decoder also sees a known class),
    ``jrvae`` (rVAE with a discrete class latent, no labels needed),
    ``ssrvae`` (``jrvae`` trained with a few labels).
    ``symmetry``: the patches' n-fold rotational symmetry; angles are then
    defined modulo ``360 / symmetry`` degrees. ``"auto"`` (the CLI's and the
    Train widget's default) is estimated from the patches when training
    starts (``core/symmetry.py``); the trained model's config holds the number.
    ``angle_prior``: concentration of the rotation prior around 0 degrees:
    0 is uniform over the circle (rotations of any size); larger values tie
    the latent angle to small rotations, as the article's rVAE does.
    ``alignment``: ``sync`` turns every patch first by a coarse angle from
    angular synchronisation of the training patches (``core/align/``; the
    synchronised reference is stored in the model), and the rVAE learns the
    content and the remaining small rotation; ``none`` is the plain rVAE;
    ``auto`` (default) is ``sync`` with the uniform angle prior (rotations of
    any size) and ``none`` when ``angle_prior > 0``.
    ``rotation_range`` (with alignment): ``limited`` measures every angle
    from the mean pose of similar patches, for data that stay within +/-90
    degrees (/ symmetry) of a common upright; ``full`` assumes rotations of
    any size (angle zero arbitrary, shared by patches that match under some
    rotation); ``auto``
    (default) tests which holds for 1-fold content and is ``full`` with
    ``symmetry`` > 1 (``core/align/rotation_range.py``).
    ``encoder_rotations``: K rotated copies the encoder reads and pools
    equivariantly (see ``models.Encoder``); 1 is a plain MLP encoder; 0
    (default) picks 1 with coarse alignment or a tied angle prior, and 16
    for the uniform prior without alignment.
    """

    kind: str = "rvae"
    patch_size: int = 32
    latent_dim: int = 2
    translation: bool = True
    hidden_dim: int = 128
    hidden_layers: int = 2
    n_classes: int = 0
    symmetry: int | str = 1
    likelihood: str = "bernoulli"
    noise: float = 0.1
    angle_prior: float = 0.0
    translation_prior: float = 0.1
    encoder_rotations: int = 0
    alignment: str = "auto"
    rotation_range: str = "auto"

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise InputError(f"Unknown model {self.kind!r}: choose one of {', '.join(MODEL_KINDS)}.")
        if int(self.patch_size) < 8:
            raise InputError(f"Patch size {self.patch_size} is too small: use at least 8 pixels.")
        if int(self.latent_dim) < 1:
            raise InputError(f"Latent dimension {self.latent_dim} is too small: use at least 1.")
        if int(self.hidden_dim) < 1 or int(self.hidden_layers) < 1:
            raise InputError("The hidden width and the number of hidden layers must be at least 1.")
        if self.symmetry != SYMMETRY_AUTO and self.symmetry not in SYMMETRIES:
            raise InputError(f"Symmetry {self.symmetry} is not supported: use one of {SYMMETRIES} or 'auto'.")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"Unknown likelihood {self.likelihood!r}: use gaussian or bernoulli.")
        if int(self.encoder_rotations) < 0:
            raise InputError("encoder_rotations must be 0 (automatic), 1 (no rotation pooling) or more.")
        if self.alignment not in ALIGNMENTS:
            raise InputError(f"Unknown alignment {self.alignment!r}: use one of {', '.join(ALIGNMENTS)}.")
        if self.rotation_range not in ROTATION_RANGES:
            raise InputError(
                f"Unknown rotation range {self.rotation_range!r}: use one of {', '.join(ROTATION_RANGES)}."
            )
        if self.noise <= 0:
            raise InputError("The noise scale must be positive.")
        if self.class_model and self.n_classes < 2:
            raise InputError(f"Model {self.kind!r} needs at least 2 classes (got {self.n_classes}).")

    @property
    def traits(self) -> KindTraits:
        return KINDS[self.kind]

    @property
    def class_model(self) -> bool:
        """Whether the model has a class (observed or latent)."""
        return self.traits.class_model

    @property
    def class_input(self) -> bool:
        """Whether the class is an input (crvae): known per patch when training and encoding."""
        return self.traits.class_input

    @property
    def class_latent(self) -> bool:
        """Whether the class is a discrete latent with a classifier head (jrvae, ssrvae)."""
        return self.traits.class_latent

    @property
    def needs_labels(self) -> bool:
        """Whether training reads classes from a labels column (crvae: all, ssrvae: some)."""
        return self.traits.needs_labels

    @property
    def pose_model(self) -> bool:
        """Whether the model infers a rotation (and shift) per patch."""
        return self.traits.pose

    @property
    def coarse_alignment(self) -> bool:
        """Whether patches are turned by a synchronised coarse angle before the rVAE sees them."""
        if not self.pose_model or self.alignment == "none":
            return False
        return self.alignment == "sync" or self.angle_prior == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, length, device, seed.

    ``epochs``: passes over every patch, or ``"auto"`` (the CLI's and the Train
    widget's default): the number of steps and a stratified sample of the
    patches when they are many, from :func:`~napari_rvae.core.budget.training_budget`.
    """

    epochs: int | str = 50
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    kl_warmup_epochs: int = 0
    # Precision of the decoder's per-pixel layers; "auto" = bfloat16
    # where the device multiplies it natively (mixed precision), else float32.
    precision: str = "auto"
    # jrvae/ssrvae class heads learn the classes of the rotation-invariant
    # similarity graph (core/graph_classes.py); False = from the ELBO (and labels) alone.
    graph_targets: bool = True
    # The central square (pixels) those classes are found on; None: the whole
    # patch; "auto": 4/3 of the typical atom spacing where the atom positions are known
    # (core.analysis, core.pipeline: class_window_for), else the whole patch.
    class_window: int | str | None = "auto"

    def __post_init__(self):
        try:
            check_epochs(self.epochs)
        except (TypeError, ValueError):
            raise InputError(f"Epochs must be auto or a whole number of at least 1 (got {self.epochs!r}).") from None
        if int(self.batch_size) < 1:
            raise InputError(f"Batch size must be at least 1 (got {self.batch_size}).")
        if not (0 < self.lr <= 1):  # NaN and inf fail too; above 1 every run diverges
            raise InputError(f"The learning rate must be above 0 and at most 1 (got {self.lr}).")
        if self.threads is not None and int(self.threads) < 1:
            raise InputError(f"Threads must be at least 1 (got {self.threads}).")
        if not (
            self.class_window is None
            or self.class_window == "auto"
            or (
                isinstance(self.class_window, int)
                and not isinstance(self.class_window, bool)
                and self.class_window >= 4
            )
        ):
            raise InputError(f"The class window must be auto, full or at least 4 pixels (got {self.class_window!r}).")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise InputError(f"Precision must be auto, float32 or bfloat16 (got {self.precision!r}).")

    def to_dict(self) -> dict:
        return asdict(self)
