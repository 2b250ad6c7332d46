"""Reward models: the HF classifier reward on a tiny offline classifier, and the reward configs."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from riskalign.errors import ConfigError
from riskalign.rewards import RewardModel, hf_classifier
from riskalign.rewards.hf_classifier import HFClassifierReward, label_mixture
from riskalign.rewards.vader import VaderReward
from tests.conftest import CONF, compose_config
from tests.tiny_models import make_tiny_classifier

TEXTS = [
    "the movie was great , i loved it",
    "awful film . the plot was boring and the acting was terrible",
    "what a wonderful story",
    "i hated the music",
    "zzz unknown words only",
]
PROMPTS = ["what did you think ?", "tell me about the film", "one word", "and the music ?", "?"]
EMOTIONS = ("sadness", "joy", "love", "anger")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "sentiment")


@pytest.fixture(scope="module")
def emotion_dir(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("models") / "emotion", labels=EMOTIONS)


def _logits_by_hand(directory: Path, texts: list[str]) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        rows = [model(**tokenizer(text, return_tensors="pt")).logits[0] for text in texts]
    return torch.stack(rows)


def test_scores_are_a_weighted_sum_of_raw_logits(classifier_dir):
    reward = HFClassifierReward(str(classifier_dir), {"POSITIVE": 1.0, 0: -0.5})
    scores = reward.score(TEXTS)
    assert isinstance(reward, RewardModel)
    assert scores.shape == (len(TEXTS),) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert torch.equal(scores, reward.score(TEXTS)), "scoring must be deterministic"
    logits = _logits_by_hand(classifier_dir, TEXTS)
    expected = 1.0 * logits[:, 1] - 0.5 * logits[:, 0]
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    assert scores.std() > 1e-3, "the tiny classifier must tell texts apart"


def test_batches_score_as_texts_one_at_a_time(classifier_dir):
    batched = HFClassifierReward(str(classifier_dir), {1: 1.0}, batch_size=2).score(TEXTS)
    single = HFClassifierReward(str(classifier_dir), {1: 1.0}, batch_size=1)
    alone = torch.cat([single.score([text]) for text in TEXTS])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    assert single.score([]).shape == (0,)


def test_max_length_truncates(classifier_dir):
    long_text = " ".join(["good"] * 3 + ["bad"] * 60)
    short = HFClassifierReward(str(classifier_dir), {1: 1.0}, max_length=5)
    full = HFClassifierReward(str(classifier_dir), {1: 1.0})
    torch.testing.assert_close(short.score([long_text]), full.score(["good good good"]))


def test_label_keys_are_case_insensitive_names_or_indices(classifier_dir):
    path = str(classifier_dir)
    reference = HFClassifierReward(path, {"POSITIVE": 1.0}).score(TEXTS)
    for key in ("positive", "Positive", 1, "1"):
        torch.testing.assert_close(HFClassifierReward(path, {key: 1.0}).score(TEXTS), reference)


@pytest.mark.parametrize(
    ("key", "shown"), [(7, "label 7 is out of range"), ("7", "label 7 is out of range"),
                       ("happy", "label 'happy' is unknown")],
)
def test_unknown_labels_are_refused_in_one_line(classifier_dir, key, shown):
    with pytest.raises(ConfigError) as error:
        HFClassifierReward(str(classifier_dir), {key: 1.0})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("reward.label_weights: ") and shown in message
    assert "has 2 labels (0: NEGATIVE, 1: POSITIVE)" in message


def test_labels_are_checked_before_any_weights_load(classifier_dir, monkeypatch):
    class NoLoading:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise AssertionError("weights loaded before the labels were checked")

    monkeypatch.setattr(hf_classifier, "AutoModelForSequenceClassification", NoLoading)
    monkeypatch.setattr(hf_classifier, "AutoTokenizer", NoLoading)
    with pytest.raises(ConfigError, match="label 'toxic' is unknown"):
        HFClassifierReward(str(classifier_dir), {"toxic": -1.0})


def test_a_label_named_twice_is_refused(classifier_dir):
    with pytest.raises(ConfigError, match="both name label 1"):
        HFClassifierReward(str(classifier_dir), {"positive": 1.0, 1: 2.0})


@pytest.mark.parametrize("path", ["./no-such-classifier", "/no/such/classifier", "~/no-such-dir"])
def test_a_missing_local_path_is_refused(path):
    with pytest.raises(ConfigError, match=r"^reward\.name_or_path='.*' does not exist: must be an "
                                          r"existing path or a hub ID$"):
        HFClassifierReward(path, {1: 1.0})


def test_label_mixture_ends_equal_single_labels(emotion_dir):
    path = str(emotion_dir)
    joy = HFClassifierReward(path, {"joy": 1.0}).score(TEXTS)
    anger = HFClassifierReward(path, {"anger": 1.0}).score(TEXTS)
    torch.testing.assert_close(label_mixture(path, ["joy", "anger"], 1.0).score(TEXTS), joy)
    torch.testing.assert_close(label_mixture(path, ["joy", "anger"], 0.0).score(TEXTS), anger)
    half = label_mixture(path, ["joy", "anger"], 0.5, batch_size=2).score(TEXTS)
    torch.testing.assert_close(half, 0.5 * joy + 0.5 * anger)


@pytest.mark.parametrize(
    ("labels", "weight", "match"),
    [(["joy", "anger"], 1.5, r"^reward\.weight=1\.5 is out of range: must be in \[0, 1\]$"),
     (["joy", "anger"], -0.1, r"^reward\.weight=-0\.1 is out of range"),
     (["joy"], 0.5, r"^reward\.labels=\['joy'\] is invalid"),
     (["joy", "anger", "love"], 0.5, r"^reward\.labels=.* must name exactly 2"),
     (["joy", "joy"], 0.5, r"^reward\.labels=.* distinct")],
)
def test_label_mixture_refuses_bad_weights_and_labels(emotion_dir, labels, weight, match):
    with pytest.raises(ConfigError, match=match):
        label_mixture(str(emotion_dir), labels, weight)


def test_text_pair_reads_the_prompt_with_the_text(classifier_dir):
    paired = HFClassifierReward(str(classifier_dir), {1: 1.0}, text_pair=True)
    plain = HFClassifierReward(str(classifier_dir), {1: 1.0})
    alone = plain.score(TEXTS)
    torch.testing.assert_close(paired.score(TEXTS), alone)  # no prompts: the text alone
    torch.testing.assert_close(plain.score(TEXTS, prompts=PROMPTS), alone)  # prompts ignored
    with_prompts = paired.score(TEXTS, prompts=PROMPTS)
    assert not torch.allclose(with_prompts, alone)
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        first = model(**tokenizer(PROMPTS[0], TEXTS[0], return_tensors="pt")).logits[0, 1]
    torch.testing.assert_close(with_prompts[0], first, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per text"):
        paired.score(TEXTS, prompts=PROMPTS[:2])


def test_vader_accepts_and_ignores_prompts():
    reward = VaderReward()
    assert isinstance(reward, RewardModel)
    torch.testing.assert_close(reward.score(TEXTS, prompts=PROMPTS), reward.score(TEXTS))


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONF / "reward").glob("*.yaml")))
def test_every_reward_config_composes_and_its_target_imports(name):
    reward = compose_config(f"reward={name}").reward
    target = reward["_target_"]
    try:
        hydra.utils.get_class(target)
    except ValueError:  # a factory function, not a class
        assert callable(hydra.utils.get_method(target))
    if "label_weights" in reward or "labels" in reward:
        assert reward["_convert_"] == "all", "label weights must arrive as a plain dict"


def test_generic_config_instantiates_on_a_local_classifier(classifier_dir):
    cfg = compose_config("reward=hf_classifier", f"reward.name_or_path={classifier_dir}").reward
    reward = hydra.utils.instantiate(cfg)
    assert isinstance(reward, HFClassifierReward)
    assert reward.text_pair is False and reward.batch_size == 32
    expected = HFClassifierReward(str(classifier_dir), {"POSITIVE": 1.0}).score(TEXTS)
    torch.testing.assert_close(reward.score(TEXTS), expected)


def test_emotion_config_instantiates_with_digit_string_override(emotion_dir):
    cfg = compose_config(
        "reward=emotion_mixture", f"reward.name_or_path={emotion_dir}", "reward.weight=0.25"
    ).reward
    mixture = hydra.utils.instantiate(cfg).score(TEXTS)
    joy = HFClassifierReward(str(emotion_dir), {"1": 1.0}).score(TEXTS)
    anger = HFClassifierReward(str(emotion_dir), {3: 1.0}).score(TEXTS)
    torch.testing.assert_close(mixture, 0.25 * joy + 0.75 * anger)
    assert OmegaConf.to_container(cfg)["labels"] == ["joy", "anger"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 0}, r"^reward\.batch_size=0 is out of range: must be >= 1$"),
     ({"max_length": -1}, r"^reward\.max_length=-1 is out of range"),
     ({"dtype": "float64"}, r"^reward\.dtype='float64' is not one of: float32, bfloat16, float16$"),
     ({"batch_size": 8.5}, r"^reward\.batch_size=8\.5 is not an integer: must be >= 1$"),
     ({"max_length": "512"}, r"^reward\.max_length='512' is not an integer"),
     ({"text_pair": "no"}, r"^reward\.text_pair='no' is not a boolean"),
     ({"device": None}, r"^reward\.device=None is not a name"),
     ({"batchsize": 8}, r"^reward\.batchsize=8 is not a known key: allowed keys are batch_size,")],
)
def test_bad_knobs_are_refused(classifier_dir, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HFClassifierReward(str(classifier_dir), {1: 1.0}, **kwargs)


@pytest.mark.parametrize(
    ("reward", "override", "match"),
    [("distilbert-imdb", "reward.batch_size=8.5", r"^reward\.batch_size=8\.5 is not an integer"),
     ("distilbert-imdb", "reward.dtype=float64", r"^reward\.dtype='float64' is not one of"),
     ("emotion_mixture", "reward.weight=2", r"^reward\.weight=2 is out of range: must be in"),
     ("emotion_mixture", "reward.max_length=0", r"^reward\.max_length=0 is out of range")],
)
def test_a_reward_config_is_checked_before_anything_loads(reward, override, match):
    cfg = compose_config(f"reward={reward}", override).reward
    with pytest.raises(ConfigError, match=match):
        hf_classifier.check_reward_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_label_weight_must_be_a_number(classifier_dir):
    with pytest.raises(ConfigError, match=r"^reward\.label_weights\.1='1' is not a finite number"):
        HFClassifierReward(str(classifier_dir), {1: "1"})
