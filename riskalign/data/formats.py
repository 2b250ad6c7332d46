"""Upstream schemas -> standard columns, one `Format` per schema.

Kinds and their columns (all strings):
    pairs       prompt, chosen, rejected   preference pairs (DPO and its variants); records
                                           without a prompt column have it implicit, as
                                           the part chosen and rejected share
    prompts     prompt, text               raw text for SFT; prompt = its opening (or all of it)
    references  prompt, reference          an instruction and a reference answer

`convert` also adds a transient `_problem` column ("" when the record is fine)
that `riskalign.data.records.check_records` reports on and drops.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value
from datasets.fingerprint import generate_random_fingerprint
from transformers import PreTrainedTokenizerBase

from riskalign.errors import ConfigError

KIND_COLUMNS = {
    "pairs": ("prompt", "chosen", "rejected"),
    "prompts": ("prompt", "text"),
    "references": ("prompt", "reference"),
}
PROBLEM_COLUMN = "_problem"
HH_ASSISTANT = "\n\nAssistant:"
# A distinctive assistant message: what follows it in a rendering is the template's end of turn.
PROBE_REPLY = "riskalign probe reply"
# Without a chat template, messages are rendered as HH transcripts are written.
FALLBACK_LABELS = {"user": "Human", "assistant": "Assistant", "system": "System"}
# Where tokenizers cut text whatever their vocabulary: words, punctuation and spaces.
TEXT_RUNS = re.compile(r"\w+|[^\w\s]+|\s+")
LINE_BREAKS = re.compile(r"(?:\s*<br\s*/?>\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class Context:
    """What a record converter may need besides the record."""

    tokenizer: PreTrainedTokenizerBase | None
    prompt_tokens: int | None
    first: dict[str, Any] | None = None  # the first record of the first split: sets the form


Record = dict[str, Any]


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    required_columns: tuple[str, ...]
    convert: Callable[[Record, Context], Record]  # one record -> standard columns (+ _problem)
    needs_prompt_tokens: bool = False


# ----- chat rendering --------------------------------------------------------------------


def has_chat_template(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(messages: list[Record], tokenizer: PreTrainedTokenizerBase | None) -> str:
    """The prompt text a model continues: the chat template with its generation prompt,
    or without one "\\n\\nHuman: ...\\n\\nAssistant:" as in HH transcripts."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _fallback(messages) + HH_ASSISTANT


def render_response(
    prompt: list[Record], response: list[Record], tokenizer: PreTrainedTokenizerBase | None
) -> str | None:
    """The text the full conversation adds after the rendered prompt.

    None when the template renders the conversation without the prompt as its
    prefix (some templates rewrite earlier turns), which no split can undo.
    """
    rendered_prompt = render_prompt(prompt, tokenizer)
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    else:
        full = _fallback(prompt + response)
    return full[len(rendered_prompt):] if full.startswith(rendered_prompt) else None


@dataclass(frozen=True)
class TemplateMarks:
    """What a chat template writes around the messages ("" for what it does not write)."""

    generation_prompt: str  # what add_generation_prompt appends, e.g. "<|im_start|>assistant\n"
    end_of_turn: str  # what follows an assistant message's content, e.g. "<|im_end|>\n"


NO_MARKS = TemplateMarks("", "")
_marks_cache: dict[tuple[str, str], TemplateMarks] = {}


def template_marks(tokenizer: PreTrainedTokenizerBase | None) -> TemplateMarks:
    """The generation prompt and end of turn of the tokenizer's chat template.

    Read off renderings of a probe conversation, once per template and special
    tokens (tokenizing a dataset asks for them once per record). Blank marks
    count as absent: whitespace alone tells nothing about where the text came from.
    """
    if not has_chat_template(tokenizer):
        return NO_MARKS
    key = (repr(tokenizer.chat_template), repr(tokenizer.special_tokens_map))
    if key not in _marks_cache:
        _marks_cache[key] = _probe_marks(tokenizer)
    return _marks_cache[key]


def _probe_marks(tokenizer: PreTrainedTokenizerBase) -> TemplateMarks:
    question = [{"role": "user", "content": "Hi"}]
    try:
        bare = tokenizer.apply_chat_template(question, tokenize=False)
        asking = tokenizer.apply_chat_template(question, tokenize=False,
                                               add_generation_prompt=True)
        answered = tokenizer.apply_chat_template(
            [*question, {"role": "assistant", "content": PROBE_REPLY}], tokenize=False
        )
    except Exception:  # a template may refuse the probe (e.g. one that demands a system turn)
        return NO_MARKS
    generation = asking[len(bare):] if asking.startswith(bare) else ""
    end = answered.rpartition(PROBE_REPLY)[2] if PROBE_REPLY in answered else ""
    return TemplateMarks(generation if generation.strip() else "", end if end.strip() else "")


def is_template_text(prompt: str, tokenizer: PreTrainedTokenizerBase | None) -> bool:
    """Whether `prompt` is the tokenizer's chat template's rendering of a conversation,
    i.e. ends with its generation prompt (chat records render to that)."""
    generation = template_marks(tokenizer).generation_prompt
    return bool(generation) and prompt.endswith(generation)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """A prompt's ids as training and sampling both read it: a chat-rendered prompt as the
    template wrote it (its own BOS, if any, and no second), other text with the
    tokenizer's special tokens."""
    return tokenizer(prompt, add_special_tokens=not is_template_text(prompt, tokenizer))[
        "input_ids"]


def prompt_special_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str) -> int:
    """How many special tokens `encode_prompt` adds to `prompt`'s own tokens."""
    return 0 if is_template_text(prompt, tokenizer) else tokenizer.num_special_tokens_to_add()


def _fallback(messages: list[Record]) -> str:
    return "".join(
        f"\n\n{FALLBACK_LABELS.get(m['role'], str(m['role']).capitalize())}: {m['content']}"
        for m in messages
    )


def _as_messages(value: Any, role: str, key: str) -> tuple[list[Record], str]:
    """Column `key`'s value as {role, content} messages, and why it is none ("" when it is).

    A string becomes one `role` message. Each message of a list needs a string role and
    content; other keys are dropped. A key whose value is null counts as absent: datasets
    gives every message the keys any message of the column has.
    """
    if value is None or isinstance(value, str):
        return [{"role": role, "content": value or ""}], ""
    if not isinstance(value, list):
        return [], f"{key} is neither a string nor a message list"
    if not value:
        return [], f"{key} is an empty message list"
    for index, message in enumerate(value):
        problem = _message_problem(message)
        if problem:
            return [], f"{key} message #{index} {problem}"
    return [{"role": m["role"], "content": m["content"]} for m in value], ""


def _message_problem(message: Any) -> str:
    if not isinstance(message, dict):
        return f"is not a {{role, content}} mapping ({type(message).__name__})"
    keys = [key for key, value in message.items() if value is not None]
    if "role" not in keys or "content" not in keys:
        return f"has keys ({', '.join(keys)}): a chat message needs role and content"
    wrong = [key for key in ("role", "content") if not isinstance(message[key], str)]
    return f"{wrong[0]} is not a string ({type(message[wrong[0]]).__name__})" if wrong else ""


def _is_chat(record: Record) -> bool:
    return any(isinstance(record.get(key), list) for key in KIND_COLUMNS["pairs"])


def _form_problem(record: Record, context: Context) -> str:
    """Why a record is not in the form of the first: all text, or chat messages."""
    if context.first is None or _is_chat(record) == _is_chat(context.first):
        return ""
    forms = ("chat messages", "plain text") if _is_chat(record) else ("plain text",
                                                                      "chat messages")
    return f"is {forms[0]} but the first record is {forms[1]}: give all records in one form"


# ----- record converters -----------------------------------------------------------------


def _preference(record: Record, context: Context) -> Record:
    if "prompt" not in record:  # TRL's implicit prompt: the start chosen and rejected share
        record = split_implicit_prompt(record["chosen"], record["rejected"])
        if record[PROBLEM_COLUMN]:
            return {"prompt": "", "chosen": "", "rejected": "",
                    PROBLEM_COLUMN: record[PROBLEM_COLUMN]}
    values = {key: record[key] for key in KIND_COLUMNS["pairs"]}
    if all(value is None or isinstance(value, str) for value in values.values()):
        return {**{key: value or "" for key, value in values.items()},
                PROBLEM_COLUMN: _form_problem(values, context)}
    if context.tokenizer is None:
        raise ConfigError(
            "data.format='preference' has chat-message records: rendering them needs a tokenizer"
        )
    prompt, problem = _as_messages(values["prompt"], "user", "prompt")
    responses = {}
    for key in ("chosen", "rejected"):
        responses[key], response_problem = _as_messages(values[key], "assistant", key)
        problem = problem or response_problem
    problem = problem or _form_problem(values, context)
    if problem:
        return {"prompt": "", "chosen": "", "rejected": "", PROBLEM_COLUMN: problem}
    result = {"prompt": render_prompt(prompt, context.tokenizer)}
    problems = []
    for key, messages in responses.items():
        if _same_messages(messages[: len(prompt)], prompt):  # the pair repeats its prompt
            messages = messages[len(prompt):]
        text = render_response(prompt, messages, context.tokenizer)
        if text is None:
            problems.append(f"the chat template does not render {key} after the prompt")
        result[key] = text or ""
    return {**result, PROBLEM_COLUMN: ", ".join(problems)}


def _same_messages(left: list[Record], right: list[Record]) -> bool:
    return [(m["role"], m["content"]) for m in left] == [(m["role"], m["content"]) for m in right]


def split_implicit_prompt(chosen: Any, rejected: Any) -> Record:
    """{prompt, chosen, rejected, _problem} of a record whose chosen and rejected each hold
    the whole conversation (or text), as TRL reads records without a prompt: the part
    both start with is the prompt, the rest are the responses."""
    if all(value is None or isinstance(value, str) for value in (chosen, rejected)):
        prompt, chosen, rejected = split_shared_text(chosen or "", rejected or "")
    elif all(isinstance(value, list) for value in (chosen, rejected)):
        (chosen, chosen_problem), (rejected, rejected_problem) = (
            _as_messages(chosen, "assistant", "chosen"),
            _as_messages(rejected, "assistant", "rejected"),
        )
        if chosen_problem or rejected_problem:
            return {PROBLEM_COLUMN: chosen_problem or rejected_problem}
        prompt, chosen, rejected = split_shared_messages(chosen, rejected)
    else:
        return {PROBLEM_COLUMN: "without a prompt column, chosen and rejected must both be "
                                "strings or both message lists"}
    problem = "" if prompt else "chosen and rejected share no start to use as the prompt"
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, PROBLEM_COLUMN: problem}


def split_shared_messages(
    chosen: list[Record], rejected: list[Record]
) -> tuple[list[Record], list[Record], list[Record]]:
    """(the leading messages both share, chosen's rest, rejected's rest); each side keeps at
    least its last message, as TRL's split does when one conversation extends the other."""
    limit = min(len(chosen), len(rejected)) - 1
    shared = 0
    while shared < limit and _same_messages([chosen[shared]], [rejected[shared]]):
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def split_shared_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(the runs of words, punctuation or spaces both texts start with, chosen's rest,
    rejected's rest), less one trailing space, which goes with the responses.

    TRL cuts at the first differing character, less one space (" blue." after
    "The sky is"), and its joint tokenization then moves a cut inside a word
    back to a token boundary ("A: bl|ue" trains as "A:" + " blue"). Prompt and
    responses are tokenized apart here, so the cut is made whole runs back: the
    same token ids, and no word split in two.
    """
    cut = 0
    for mine, theirs in zip(TEXT_RUNS.findall(chosen), TEXT_RUNS.findall(rejected)):
        if mine != theirs:
            break
        cut += len(mine)
    if cut and chosen[cut - 1] == " ":
        cut -= 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def split_hh(transcript: str) -> tuple[str, str] | None:
    """(prompt up to and including the last "\\n\\nAssistant:", response), as the DPO
    reference code splits HH transcripts; None without an Assistant turn."""
    index = transcript.rfind(HH_ASSISTANT)
    if index < 0:
        return None
    cut = index + len(HH_ASSISTANT)
    return transcript[:cut], transcript[cut:]


def _hh(record: Record, context: Context) -> Record:
    chosen, rejected = record["chosen"] or "", record["rejected"] or ""
    split = split_hh(chosen)
    if split is None:
        return {"prompt": "", "chosen": chosen, "rejected": rejected,
                PROBLEM_COLUMN: "chosen has no Assistant turn"}
    prompt, chosen_response = split
    if rejected.startswith(prompt):
        return {"prompt": prompt, "chosen": chosen_response,
                "rejected": rejected[len(prompt):], PROBLEM_COLUMN: ""}
    own = split_hh(rejected)
    return {"prompt": prompt, "chosen": chosen_response,
            "rejected": own[1] if own else rejected,
            PROBLEM_COLUMN: "chosen and rejected prompts differ"}


def opening(text: str, tokens: int, tokenizer: PreTrainedTokenizerBase) -> str:
    """The first `tokens` tokens of `text` (special tokens aside), as text.

    A fast tokenizer's offsets give a slice of `text` itself, so the prompt is
    an exact prefix of the text whatever the decoder does with spaces; other
    tokenizers decode the ids.
    """
    if tokenizer.is_fast:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        return text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= tokens else tokenizer.decode(ids[:tokens],
                                                            skip_special_tokens=True)


def _text_with_opening(text: str, context: Context) -> Record:
    if context.prompt_tokens is None:  # only `text` allows it: each text is a whole prompt
        return {"prompt": text, "text": text}
    return {"prompt": opening(text, context.prompt_tokens, context.tokenizer), "text": text}


def _imdb(record: Record, context: Context) -> Record:
    # Reviews break paragraphs with "<br /><br />": one space keeps the words apart.
    return _text_with_opening(LINE_BREAKS.sub(" ", record["text"] or "").strip(), context)


def _plain_text(record: Record, context: Context) -> Record:
    return _text_with_opening(record["text"] or "", context)


def _jigsaw(record: Record, context: Context) -> Record:
    return _text_with_opening(record["comment_text"] or "", context)


def _alpacaeval(record: Record, context: Context) -> Record:
    instruction = record["instruction"] or ""
    if has_chat_template(context.tokenizer):
        instruction = render_prompt([{"role": "user", "content": instruction}], context.tokenizer)
    return {"prompt": instruction, "reference": record["output"] or ""}


FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        # the prompt column may be absent: see split_implicit_prompt
        Format("preference", "pairs", ("chosen", "rejected"), _preference),
        Format("hh", "pairs", ("chosen", "rejected"), _hh),
        Format("imdb", "prompts", ("text",), _imdb, needs_prompt_tokens=True),
        Format("emotion", "prompts", ("text",), _plain_text, needs_prompt_tokens=True),
        Format("text", "prompts", ("text",), _plain_text),
        Format("jigsaw", "prompts", ("comment_text",), _jigsaw, needs_prompt_tokens=True),
        Format("alpacaeval", "references", ("instruction", "output"), _alpacaeval),
    )
}


# ----- entry points ----------------------------------------------------------------------


def get_format(name: str | None) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"data.format={name!r} is not one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def format_kind(name: str | None) -> str:
    """The kind ("pairs", "prompts" or "references") a format produces."""
    return get_format(name).kind


def convert(
    splits: DatasetDict,
    format_name: str,
    tokenizer: PreTrainedTokenizerBase | None,
    *,
    prompt_tokens: int | None = None,
) -> DatasetDict:
    """Every split in the standard columns of the format's kind, plus `_problem`.

    All other columns are dropped. imdb and emotion cut prompts to `prompt_tokens`
    tokens; text does when it is set (else each whole text is a prompt).
    """
    fmt = get_format(format_name)
    if fmt.kind == "prompts" and (fmt.needs_prompt_tokens or prompt_tokens is not None):
        if not (isinstance(prompt_tokens, int) and prompt_tokens > 0):
            raise ConfigError(
                f"data.prompt_tokens={prompt_tokens!r} is invalid for "
                f"data.format={fmt.name!r}: must be an integer > 0"
            )
        if tokenizer is None:
            raise ConfigError(f"data.format={fmt.name!r} needs a tokenizer to cut prompts")
    for split, dataset in splits.items():
        missing = [c for c in fmt.required_columns if c not in dataset.column_names]
        if missing:
            raise ConfigError(
                f"data.format={fmt.name!r} needs column(s) {', '.join(missing)} in split "
                f"{split!r} (has: {', '.join(dataset.column_names)})"
            )
    first = next((dataset[0] for dataset in splits.values() if len(dataset)), None)
    context = Context(tokenizer, prompt_tokens, first)
    converted: dict[int, Dataset] = {}  # alpaca_eval trains and evaluates on one split
    for dataset in splits.values():
        if id(dataset) not in converted:
            converted[id(dataset)] = _convert_split(dataset, fmt, context)
    return DatasetDict({split: converted[id(dataset)] for split, dataset in splits.items()})


def _convert_split(dataset: Dataset, fmt: Format, context: Context) -> Dataset:
    columns = (*KIND_COLUMNS[fmt.kind], PROBLEM_COLUMN)

    def convert_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {column: [] for column in columns}
        for values in zip(*batch.values()):
            record = fmt.convert(dict(zip(batch, values)), context)
            for column in columns:
                out[column].append(record.get(column, ""))
        return out

    converted = dataset.map(
        convert_batch,
        batched=True,
        remove_columns=dataset.column_names,
        # strings: a column that held chat messages would keep their (Json) feature
        features=Features({column: Value("string") for column in columns}),
        keep_in_memory=True,  # no cache files beside a dataset that runs share
        # Never cached, so a random fingerprint spares hashing the tokenizer.
        new_fingerprint=generate_random_fingerprint(),
        desc=f"format {fmt.name}",
    )
    return converted.select_columns(list(columns))  # standard order, whatever the input's was
