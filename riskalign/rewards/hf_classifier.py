"""A Hugging Face sequence classifier as a reward: a weighted sum of its raw logits.

Raw logits rather than probabilities, as the papers use them: RA-RLHF and Ra-DPO
score IMDb with the POSITIVE logit of distilbert-imdb, RA-RLHF scores Jigsaw with
minus the toxic logit of toxic-bert. The config and the label weights are checked
before any weights load, so a wrong label fails in a second, not after a download.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from riskalign.config.fields import (
    DTYPES,
    Choice,
    Integer,
    Real,
    boolean,
    check_local_path,
    read_settings,
    setting,
    text,
)
from riskalign.errors import ConfigError
from riskalign.models.loading import torch_dtype, unpickling_refusal

MIXTURE_WEIGHT = Real(low=0.0, high=1.0, low_open=False)  # [0, 1]


@dataclass(frozen=True)
class ClassifierSettings:
    """How a classifier reward reads texts: the keys of its config (conf/reward) beside the
    classifier itself (name_or_path) and its labels."""

    batch_size: int = setting(32, Integer())
    max_length: int = setting(512, Integer())  # tokens; capped at the tokenizer's limit
    text_pair: bool = setting(False, boolean)  # true: score (prompt, text) as a sequence pair
    device: str = setting("cpu", text)
    dtype: str = setting("float32", Choice(DTYPES))


def _describe(id2label: Mapping[int, str]) -> str:
    listed = ", ".join(f"{index}: {id2label[index]}" for index in sorted(id2label))
    return f"has {len(id2label)} labels ({listed})"


def _label_index(key: int | str, id2label: Mapping[int, str], where: str) -> int:
    """The logit index a label_weights key names: an index (int or digits) or a label name."""
    if isinstance(key, bool):  # bool is an int; YAML `yes:` would otherwise mean label 1
        raise ConfigError(f"reward.label_weights: label {key!r} is not a label name or index")
    if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
        index = int(key)
        if index not in id2label:
            raise ConfigError(
                f"reward.label_weights: label {index} is out of range: "
                f"the classifier at {where!r} {_describe(id2label)}"
            )
        return index
    exact = [index for index, name in id2label.items() if name == key]
    folded = [index for index, name in id2label.items() if name.lower() == str(key).lower()]
    matches = exact or folded
    if len(matches) != 1:
        problem = "is unknown" if not matches else "matches several labels"
        raise ConfigError(
            f"reward.label_weights: label {key!r} {problem}: "
            f"the classifier at {where!r} {_describe(id2label)}"
        )
    return matches[0]


def label_weight_vector(
    label_weights: Mapping[int | str, float], id2label: Mapping[int, str], where: str
) -> torch.Tensor:
    """Weights per logit [num_labels] from a {label name or index: weight} mapping."""
    if not label_weights:
        raise ConfigError("reward.label_weights is empty: name at least one label and its weight")
    id2label = {int(index): str(name) for index, name in id2label.items()}
    weights = torch.zeros(len(id2label), dtype=torch.float32)
    seen: dict[int, int | str] = {}
    for key, weight in label_weights.items():
        index = _label_index(key, id2label, where)
        if index in seen:
            raise ConfigError(
                f"reward.label_weights: labels {seen[index]!r} and {key!r} both name "
                f"label {index} ({id2label[index]}): give each label once"
            )
        seen[index] = key
        weights[index] = Real()(f"reward.label_weights.{key}", weight)
    return weights


class HFClassifierReward:
    """Σ_k w_k · logit_k of a sequence classifier, per text; higher is better."""

    def __init__(
        self, name_or_path: str, label_weights: Mapping[int | str, float], **settings: Any
    ) -> None:
        """`settings`: those of ClassifierSettings (batch_size, max_length, text_pair, device,
        dtype), each defaulted there."""
        knobs = read_settings(ClassifierSettings, "reward", settings)
        check_local_path(name_or_path, "reward.name_or_path")
        source = os.path.expanduser(name_or_path)  # a no-op for hub IDs
        config = AutoConfig.from_pretrained(source)
        self.weights = label_weight_vector(label_weights, config.id2label, name_or_path)
        self.batch_size, self.text_pair = knobs.batch_size, knobs.text_pair
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        # Never past what the model's positions allow; some tokenizers report a huge sentinel.
        self.max_length = min(knobs.max_length, self.tokenizer.model_max_length)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                source, config=config, dtype=torch_dtype(knobs.dtype, "reward.dtype")
            ).to(knobs.device)
        except pickle.UnpicklingError as error:  # a .bin file with objects torch won't load
            raise ConfigError(unpickling_refusal("reward.name_or_path", name_or_path, error)) \
                from None
        self.model.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def logits(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        """Raw float32 logits [len(texts), num_labels], on the CPU."""
        if prompts is not None and len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts: give one per text")
        pairs = self.text_pair and prompts is not None
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            # A question/answer reward model reads (prompt, answer) as a sequence pair.
            firsts = prompts[start:start + self.batch_size] if pairs else batch
            seconds = batch if pairs else None
            encoded = self.tokenizer(
                firsts,
                seconds,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out.append(self.model(**encoded).logits.float().cpu())
        if not out:
            return torch.zeros((0, self.weights.numel()), dtype=torch.float32)
        return torch.cat(out)

    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return (self.logits(texts, prompts) * self.weights).sum(-1)


def label_mixture(
    name_or_path: str, labels: list[str], weight: float, **settings: Any
) -> HFClassifierReward:
    """weight · logit(labels[0]) + (1 - weight) · logit(labels[1]).

    The KLDPO/WDPO emotion experiment trains at one mixture weight and evaluates at
    shifted ones, so the weight is the knob and the two labels a config choice.
    """
    return HFClassifierReward(name_or_path, mixture_weights(labels, weight), **settings)


def mixture_weights(labels: list[str], weight: float) -> dict[str, float]:
    """label_mixture's {label: weight} of its two labels."""
    first, second = _two_labels("reward.labels", labels)
    weight = MIXTURE_WEIGHT("reward.weight", weight)
    return {first: weight, second: 1.0 - weight}


def _two_labels(path: str, value: Any) -> tuple[str, str]:
    labels = list(value)
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ConfigError(f"{path}={labels} is invalid: must name exactly 2 distinct labels")
    return labels[0], labels[1]


def check_reward_config(reward: Mapping[str, Any]) -> None:
    """The path and labels of a classifier reward config (resolved, as plain dicts), checked
    before anything loads: from the classifier's config.json where it is on disk already (a
    directory or the HF cache). Otherwise instantiating checks them after the download, still
    before the weights load. Other rewards: nothing to check."""
    target = str(reward.get("_target_", "")).rpartition(".")[2]
    if target == "HFClassifierReward":
        label_weights, own = reward["label_weights"], ("name_or_path", "label_weights")
    elif target == "label_mixture":
        label_weights = mixture_weights(reward["labels"], reward["weight"])
        own = ("name_or_path", "labels", "weight")
    else:
        return
    # The rest are the classifier's settings; Hydra's own keys (_target_, _convert_) aside.
    read_settings(ClassifierSettings, "reward", {
        key: value for key, value in reward.items() if key not in own and not key.startswith("_")
    })
    name_or_path = str(reward["name_or_path"])
    check_local_path(name_or_path, "reward.name_or_path")
    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(name_or_path),
                                            local_files_only=True)
    except (OSError, ValueError):  # not downloaded yet
        return
    label_weight_vector(label_weights, config.id2label, name_or_path)
