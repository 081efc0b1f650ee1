"""Import name → distribution name, for the common cases where they differ.

Pure data and one function; no I/O.
"""

from __future__ import annotations

import sys

# Import names whose distribution on PyPI has another name. Everything not in
# this table is assumed to be installable under its own (top-level) name.
_DIST: dict[str, str] = {
    "yaml": "PyYAML",
    "cv2": "opencv-python",
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "serial": "pyserial",
    "usb": "pyusb",
    "Crypto": "pycryptodome",
    "Cryptodome": "pycryptodomex",
    "OpenSSL": "pyOpenSSL",
    "magic": "python-magic",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "PyMuPDF",
    "git": "GitPython",
    "github": "PyGithub",
    "gi": "PyGObject",
    "attr": "attrs",
    "google.protobuf": "protobuf",
    "grpc": "grpcio",
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "pkg_resources": "setuptools",
    "setuptools": "setuptools",
    "zmq": "pyzmq",
    "websocket": "websocket-client",
    "socks": "PySocks",
    "Levenshtein": "python-Levenshtein",
    "slugify": "python-slugify",
    "multipart": "python-multipart",
    "jose": "python-jose",
    "ldap": "python-ldap",
    "nacl": "PyNaCl",
    "wx": "wxPython",
    "sentencepiece": "sentencepiece",
    "tensorflow_hub": "tensorflow-hub",
    "lxml": "lxml",
    "markdown": "Markdown",
    "mpl_toolkits": "matplotlib",
    "pylab": "matplotlib",
    "win32api": "pywin32",
    "win32con": "pywin32",
    "Bio": "biopython",
    "typing_extensions": "typing-extensions",
    "ruamel": "ruamel.yaml",
    "toml": "toml",
    "tomli_w": "tomli-w",
    "faiss": "faiss-cpu",
    "xdist": "pytest-xdist",
    "pytest_asyncio": "pytest-asyncio",
    "pytest_trio": "pytest-trio",
    "pytest_cov": "pytest-cov",
    "pytest_mock": "pytest-mock",
    "dns": "dnspython",
    "jinja2": "Jinja2",
    "msgpack": "msgpack",
    "Xlib": "python-xlib",
    "igraph": "python-igraph",
}

# Module names that are never installable from PyPI: the standard library of
# this interpreter plus names that only exist inside other stdlibs' private parts.
STDLIB_MODULES: frozenset[str] = frozenset(sys.stdlib_module_names) | frozenset(
    {"__main__", "__future__", "builtins", "tomllib", "distutils", "asynchat", "asyncore", "imp", "smtpd"}
)


def top_level(module: str) -> str:
    """``"a.b.c"`` → ``"a"``."""
    return module.split(".", 1)[0]


def is_stdlib(module: str) -> bool:
    """True when the module (or its top-level package) belongs to Python's standard library."""
    return top_level(module) in STDLIB_MODULES


def distribution_for(module: str) -> str:
    """The distribution that provides import name ``module``.

    Dotted names use their top-level part (``yaml.constructor`` → ``PyYAML``),
    except for a few namespace packages listed in full (``google.protobuf``).
    Unknown names map to themselves with ``_`` replaced by ``-``, which is how
    most projects are published.
    """
    if module in _DIST:
        return _DIST[module]
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in _DIST:
            return _DIST[prefix]
    top = parts[0]
    return _DIST.get(top, top.replace("_", "-"))
