"""AlpacaEval-style win rate of sampled completions against reference outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from riskalign.errors import ConfigError
from riskalign.evaluation.alignment import EvalSettings
from riskalign.evaluation.win_rate import win_rate
from riskalign.models.sampling import sample_completions
from riskalign.worlds.grammar import vocabulary
from riskalign.worlds.tokenizer import word_level_tokenizer

PROMPTS = ["the movie was", "i loved", "this film", "the plot", "a story about", "i hated"] * 2
# Short references lose to 8 sampled words on length, long ones win: a mixed win rate.
LONG = "was a long and careful film that took its time with every one of its many characters"
REFERENCES = ["good", LONG, "was fine", LONG + " again", "", "the ending"] * 2
SETTINGS = EvalSettings(
    max_new_tokens=8, temperature=1.0, seed=3, batch_size=4, tail_fraction=0.2, tail_threshold=0.0
)


class LengthReward:
    """Longer is better; records the prompts it was given."""

    def __init__(self) -> None:
        self.seen_prompts: list[list[str] | None] = []

    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        self.seen_prompts.append(prompts)
        return torch.tensor([float(len(text)) for text in texts])


class ConstantReward:
    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return torch.full((len(texts),), 0.5)


class ReferencesLoseReward:
    """Every reference output scores below every policy completion."""

    def score(self, texts: list[str], prompts: list[str] | None = None) -> torch.Tensor:
        return torch.tensor([-1.0 if text in REFERENCES else float(len(text)) for text in texts])


@pytest.fixture(scope="module")
def policy_and_tokenizer():
    tokenizer = word_level_tokenizer(vocabulary())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config).eval(), tokenizer


def test_win_rate_is_the_fraction_of_wins_in_the_rows(policy_and_tokenizer):
    policy, tokenizer = policy_and_tokenizer
    reward = LengthReward()
    summary, rows = win_rate(policy, tokenizer, PROMPTS, REFERENCES, reward, SETTINGS)
    assert len(rows) == summary["num_prompts"] == len(PROMPTS)
    wins = [
        1.0 if row["reward"] > row["reference_reward"]
        else 0.5 if row["reward"] == row["reference_reward"] else 0.0
        for row in rows
    ]
    assert [row["win"] for row in rows] == wins
    assert summary["win_rate"] == pytest.approx(sum(wins) / len(wins))
    assert 0.0 < summary["win_rate"] < 1.0, "length against mixed references should be mixed"
    assert summary["reward_mean"] == pytest.approx(
        sum(len(row["completion"]) for row in rows) / len(rows)
    )
    assert summary["reference_reward_mean"] == pytest.approx(
        sum(len(reference) for reference in REFERENCES) / len(REFERENCES)
    )
    assert [row["prompt"] for row in rows] == PROMPTS
    assert [row["reference"] for row in rows] == REFERENCES
    # The reward judges each text against its own prompt, batch by batch.
    assert [prompt for prompts in reward.seen_prompts[::2] for prompt in prompts] == PROMPTS
    assert reward.seen_prompts[::2] == reward.seen_prompts[1::2]


def test_completions_are_the_seeded_samples(policy_and_tokenizer):
    policy, tokenizer = policy_and_tokenizer
    _, rows = win_rate(policy, tokenizer, PROMPTS, REFERENCES, LengthReward(), SETTINGS)
    sampled = sample_completions(
        policy, tokenizer, PROMPTS, max_new_tokens=SETTINGS.max_new_tokens,
        temperature=SETTINGS.temperature, seed=SETTINGS.seed, batch_size=SETTINGS.batch_size,
    )
    assert [row["completion"] for row in rows] == [
        text for batch in sampled for text in batch.completions
    ]


def test_ties_count_half(policy_and_tokenizer):
    policy, tokenizer = policy_and_tokenizer
    summary, rows = win_rate(policy, tokenizer, PROMPTS, REFERENCES, ConstantReward(), SETTINGS)
    assert summary["win_rate"] == 0.5
    assert all(row["win"] == 0.5 for row in rows)


def test_references_that_always_lose_give_a_win_rate_of_one(policy_and_tokenizer):
    policy, tokenizer = policy_and_tokenizer
    summary, _ = win_rate(
        policy, tokenizer, PROMPTS, REFERENCES, ReferencesLoseReward(), SETTINGS
    )
    assert summary["win_rate"] == 1.0
    assert summary["reference_reward_mean"] == -1.0


def test_same_seed_same_result_and_another_seed_differs(policy_and_tokenizer):
    policy, tokenizer = policy_and_tokenizer
    first = win_rate(policy, tokenizer, PROMPTS, REFERENCES, LengthReward(), SETTINGS)
    again = win_rate(policy, tokenizer, PROMPTS, REFERENCES, LengthReward(), SETTINGS)
    assert first == again
    other_settings = EvalSettings(**{**SETTINGS.__dict__, "seed": SETTINGS.seed + 1})
    other = win_rate(policy, tokenizer, PROMPTS, REFERENCES, LengthReward(), other_settings)
    assert [row["completion"] for row in other[1]] != [row["completion"] for row in first[1]]


@pytest.mark.parametrize(
    ("prompts", "references", "match"),
    [([], [], r"^win_rate: prompts is empty"),
     (PROMPTS, REFERENCES[:-1], r"^win_rate: 12 prompts but 11 references: need exactly one")],
)
def test_bad_inputs_are_refused_in_one_line(policy_and_tokenizer, prompts, references, match):
    policy, tokenizer = policy_and_tokenizer
    with pytest.raises(ConfigError, match=match) as error:
        win_rate(policy, tokenizer, prompts, references, LengthReward(), SETTINGS)
    assert "\n" not in str(error.value)
