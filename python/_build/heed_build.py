"""A PEP 517 build backend for the heed package, standard library only, so
that `pip install ./python` builds offline (pip's build isolation then has
nothing to fetch).

It writes one wheel: the package (heed/*.py) and, when it finds one, the
shared library libheed.so that `make` built ($HEED_LIB, else
../build/libheed.so beside this folder), so the installed package loads it
from its own folder. Without a library the wheel is pure Python and the
package looks for libheed.so on the system (make install) at import.
"""
import base64
import hashlib
import os
import sysconfig
import tomllib
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _library():
    path = os.environ.get("HEED_LIB") or os.path.join(HERE, "..", "build", "libheed.so")
    return os.path.realpath(path) if os.path.exists(path) else None


def _metadata(p):
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"], "Version: " + p["version"],
             "Summary: " + p.get("description", ""), "Requires-Python: " + p.get("requires-python", ">=3")]
    lines += ["Requires-Dist: " + d for d in p.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _dist_info(p):
    return "%s-%s.dist-info" % (p["name"], p["version"])


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    p = _project()
    d = os.path.join(metadata_directory, _dist_info(p))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(_metadata(p))
    return _dist_info(p)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    lib = _library()
    tag = "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_") if lib else "py3-none-any"
    name = "%s-%s-%s.whl" % (p["name"], p["version"], tag)
    files = []
    pkg = os.path.join(HERE, "heed")
    for fn in sorted(os.listdir(pkg)):
        if fn.endswith(".py"):
            files.append(("heed/" + fn, os.path.join(pkg, fn)))
    if lib:
        files.append(("heed/libheed.so", lib))
    info = _dist_info(p)
    extra = {
        info + "/METADATA": _metadata(p).encode(),
        info + "/WHEEL": ("Wheel-Version: 1.0\nGenerator: heed_build\nRoot-Is-Purelib: %s\nTag: %s\n" %
                          ("false" if lib else "true", tag)).encode(),
        info + "/top_level.txt": b"heed\n",
    }
    record = []
    path = os.path.join(wheel_directory, name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, src in files:
            with open(src, "rb") as f:
                data = f.read()
            z.writestr(arc, data)
            record.append((arc, data))
        for arc, data in extra.items():
            z.writestr(arc, data)
            record.append((arc, data))
        lines = ["%s,sha256=%s,%d" % (arc, base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=")
                                      .decode(), len(d)) for arc, d in record]
        lines.append(info + "/RECORD,,")
        z.writestr(info + "/RECORD", "\n".join(lines) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    p = _project()
    base = "%s-%s" % (p["name"], p["version"])
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as t:
        for rel in ("pyproject.toml", "README.md", "_build/heed_build.py"):
            if os.path.exists(os.path.join(HERE, rel)):
                t.add(os.path.join(HERE, rel), arcname=base + "/" + rel)
        for fn in sorted(os.listdir(os.path.join(HERE, "heed"))):
            if fn.endswith(".py"):
                t.add(os.path.join(HERE, "heed", fn), arcname=base + "/heed/" + fn)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        data = _metadata(p).encode()
        info.size = len(data)
        import io
        t.addfile(info, io.BytesIO(data))
    return base + ".tar.gz"
