"""Falco's http_output, replayed: the libcurl calls of falcosecurity/falco userspace/falco/outputs_http.cpp.

``init()`` sets CURLOPT_HTTPHEADER ("Content-Type: application/json" with json_output), CURLOPT_URL to the
configured ``http_output.url`` as is, CURLOPT_USERAGENT ``falcosecurity/falco``, CURLOPT_POSTFIELDSIZE -1 and,
with ``compress_uploads: true``, CURLOPT_TRANSFER_ENCODING 1; ``output()`` sets CURLOPT_POSTFIELDS to the JSON
line and calls curl_easy_perform. It never sets CURLOPT_USERPWD or CURLOPT_HTTPAUTH: libcurl takes the
credentials from the URL's user part and, its default auth being Basic, sends ``Authorization: Basic`` (the
request line carries only the path). Calling the same functions of this machine's libcurl through ctypes shows
exactly what Falco would send.
"""

from __future__ import annotations

import ctypes
import ctypes.util

CURLOPT_URL = 10002
CURLOPT_HTTPHEADER = 10023
CURLOPT_USERAGENT = 10018
CURLOPT_POSTFIELDSIZE = 60
CURLOPT_POSTFIELDS = 10015
CURLOPT_TRANSFER_ENCODING = 207
CURLOPT_WRITEFUNCTION = 20011
CURLINFO_RESPONSE_CODE = 0x200002

_path = ctypes.util.find_library("curl")
lib = ctypes.CDLL(_path) if _path else None
if lib is not None:
    lib.curl_easy_init.restype = ctypes.c_void_p
    lib.curl_easy_setopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.curl_easy_perform.argtypes = [ctypes.c_void_p]
    lib.curl_easy_getinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.curl_easy_cleanup.argtypes = [ctypes.c_void_p]
    lib.curl_slist_append.restype = ctypes.c_void_p
    lib.curl_slist_append.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.curl_slist_free_all.argtypes = [ctypes.c_void_p]

_WRITE = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p)
_noop = _WRITE(lambda ptr, size, n, user: size * n)  # http_output.echo: false


def post(url: str, body: bytes, *, compress_uploads: bool = False, json_output: bool = True) -> int:
    """One alert as http_output sends it; returns the HTTP status (Falco itself ignores it)."""
    h = lib.curl_easy_init()
    headers = lib.curl_slist_append(
        None, b"Content-Type: application/json" if json_output else b"Content-Type: text/plain"
    )
    url_c, ua_c, body_c = ctypes.c_char_p(url.encode()), ctypes.c_char_p(b"falcosecurity/falco"), ctypes.c_char_p(body)
    try:
        lib.curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers)
        lib.curl_easy_setopt(h, CURLOPT_URL, url_c)
        lib.curl_easy_setopt(h, CURLOPT_USERAGENT, ua_c)
        lib.curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, ctypes.c_void_p(2**64 - 1))  # -1: strlen of the fields
        lib.curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ctypes.cast(_noop, ctypes.c_void_p))
        if compress_uploads:
            lib.curl_easy_setopt(h, CURLOPT_TRANSFER_ENCODING, ctypes.c_void_p(1))
        lib.curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_c)
        res = lib.curl_easy_perform(h)
        if res != 0:
            raise OSError(f"libcurl failed to perform call: code {res}")
        code = ctypes.c_long()
        lib.curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ctypes.byref(code))
        return code.value
    finally:
        lib.curl_slist_free_all(headers)
        lib.curl_easy_cleanup(h)
