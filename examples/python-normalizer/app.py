"""python-drug-normalizer: a medtune normalizer plugin written in Python.

It finds a handful of drug names in each document (whole words, case-insensitive unless
the `case_sensitive` setting says "true") and maps each to its MeSH descriptor.

Built into a WebAssembly component for the `normalizer` world of `medtune:plugin@0.2.0`
by componentize-py (see build.sh). Plain Python, standard library only.

Contract points this file keeps (wit/types.wit, wit/worlds.wit):
- spans are CHARACTER offsets (Unicode scalar values) into `document.text`: Python `str`
  indices are exactly that, so the regex match offsets are used as they are. The text is
  never lower-cased before matching (`str.lower()` can change the length, e.g. "İ"), the
  regex matches case-insensitively instead.
- a span is never empty, lies inside one of `document.fields` and does not cut a grapheme
  cluster (a match followed by a combining mark is skipped).
- `describe()` answers the kind of the world (normalizer) and the contract version the
  component was built against (0.2.0).
- `configure()` refuses an unknown key, or an impossible value, with `plugin-error.config`.
- `normalize()` returns one result per document, in order.
"""

import re
import unicodedata

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.types import (
    Concept,
    Document,
    Mention,
    PluginError_Config,
    PluginError_Internal,
    PluginInfo,
    PluginKind,
    Span,
)

NAME = "python-drug-normalizer"
VERSION = "0.1.0"
CONTRACT_VERSION = "0.2.0"  # the package line of the WIT this is built against

# surface form -> (MeSH descriptor id, preferred name)
TERMS = {
    "metformin": ("D008687", "Metformin"),
    "aspirin": ("D001241", "Aspirin"),
    "acetylsalicylic acid": ("D001241", "Aspirin"),
    "warfarin": ("D014859", "Warfarin"),
    "insulin glargine": ("D000069036", "Insulin Glargine"),
    "glargine": ("D000069036", "Insulin Glargine"),
}

# Score of a match written exactly as the term (lower case) and of one in another case.
EXACT_SCORE = 1.0
CASE_FOLDED_SCORE = 0.9


# Longest terms first so that "insulin glargine" wins over "glargine" at the same place.
_ORDER = sorted(TERMS, key=len, reverse=True)


def _pattern(flags: int) -> "re.Pattern[str]":
    # One named group per term (`t0`, `t1`...), so a match names its term whatever its case.
    # Words of a term are separated by spaces or tabs only (never a line break, so a match
    # cannot run from one field into the next).
    alts = [f"(?P<t{i}>" + r"[ \t]+".join(re.escape(w) for w in term.split()) + ")" for i, term in enumerate(_ORDER)]
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", flags)


# Compiled at build time: componentize-py runs module-level code once and snapshots it.
_CASE_INSENSITIVE = _pattern(re.IGNORECASE)
_CASE_SENSITIVE = _pattern(0)

# The settings, reset by each instantiation (the host calls configure once after it).
_state = {"pattern": _CASE_INSENSITIVE}

SETTINGS = ("case_sensitive",)


def _extends_previous(ch: str) -> bool:
    """Whether `ch` joins the character before it into one grapheme cluster (UAX #29
    Extend / SpacingMark / ZWJ, conservatively): a span must not end just before it."""
    cp = ord(ch)
    if cp < 0x300:
        return False
    if cp in (0x200C, 0x200D) or 0x1F3FB <= cp <= 0x1F3FF or 0xFF9E <= cp <= 0xFF9F or 0xE0020 <= cp <= 0xE007F:
        return True
    return unicodedata.category(ch) in ("Mn", "Mc", "Me")


# UAX #29 Prepend characters: a span must not start just after one.
_PREPEND = set(range(0x600, 0x606)) | {0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0xD4E, 0x110BD, 0x110CD, 0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, 0x11D46} | set(range(0x11A84, 0x11A8A))


def _find(doc: Document) -> list:
    text = doc.text
    pattern = _state["pattern"]
    # Search each field (a span must lie inside one); the whole text if there are none.
    ranges = [(f.span.start, f.span.end) for f in doc.fields] or [(0, len(text))]
    mentions = []
    for start, end in ranges:
        if not (0 <= start <= end <= len(text)):
            continue  # not ours to judge: the host checks fields
        for m in pattern.finditer(text, start, end):
            a, b = m.span()
            if a == b:
                continue
            if b < len(text) and _extends_previous(text[b]):
                continue
            if a > 0 and ord(text[a - 1]) in _PREPEND:
                continue
            surface = m.group(0)
            term = _ORDER[int(m.lastgroup[1:])]
            concept_id, preferred = TERMS[term]
            score = EXACT_SCORE if surface == term else CASE_FOLDED_SCORE
            mentions.append(Mention(span=Span(start=a, end=b), concept=Concept(id=concept_id, preferred_name=preferred), score=score))
    mentions.sort(key=lambda x: (x.span.start, x.span.end))
    return mentions


class NormalizerApi(exports.NormalizerApi):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            version=VERSION,
            kind=PluginKind.NORMALIZER,
            contract_version=CONTRACT_VERSION,
            description="Finds a few drug names (metformin, aspirin, warfarin, insulin glargine) and maps them to MeSH (Python example)",
        )

    def configure(self, settings: list) -> None:
        pattern = _CASE_INSENSITIVE
        for s in settings:
            if s.key not in SETTINGS:
                raise Err(PluginError_Config(f"unknown setting {s.key!r} (known: {', '.join(SETTINGS)})"))
            value = s.value.strip().lower()
            if value == "true":
                pattern = _CASE_SENSITIVE
            elif value == "false":
                pattern = _CASE_INSENSITIVE
            else:
                raise Err(PluginError_Config(f"case_sensitive must be \"true\" or \"false\", not {s.value!r}"))
        _state["pattern"] = pattern

    def normalize(self, batch: list) -> list:
        out = []
        for doc in batch:
            try:
                out.append(Ok(_find(doc)))
            except Exception as e:  # one bad record must not fail the batch
                out.append(Err(PluginError_Internal(f"record {doc.id}: {type(e).__name__}: {e}")))
        return out
