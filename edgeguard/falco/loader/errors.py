"""Load errors and warnings (Falco's ``falco_load_result``), and where the reader is while it reads."""

from __future__ import annotations

from dataclasses import dataclass

_TITLES = {
    "LOAD_ERR_FILE_READ": "Could not read file",
    "LOAD_ERR_YAML_PARSE": "Invalid yaml",
    "LOAD_ERR_YAML_VALIDATE": "Error validating internal structure of YAML file",
    "LOAD_ERR_COMPILE_CONDITION": "Error compiling condition",
    "LOAD_ERR_COMPILE_OUTPUT": "Error compiling output",
    "LOAD_ERR_VALIDATE": "Error validating rule/macro/list/exception objects",
}


class RulesLoadError(Exception):
    """A load error naming the file, the item and the reason."""

    def __init__(self, file: str, item: str, code: str, reason: str, line: int | None = None):
        self.file, self.item, self.code, self.reason, self.line = file, item, code, reason, line
        self.warnings: list = []  # the warnings given before the error (Falco reports them with it)
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {item}: {code} ({_TITLES.get(code, code)}): {reason}")


@dataclass
class LoadWarning:
    file: str
    item: str
    code: str
    message: str

    def __str__(self):
        return f"{self.file}: {self.item}: {self.code}: {self.message}"


class ItemError(Exception):
    """An error in the item being read; the reader adds the file, item and line."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


def err(reason, code="LOAD_ERR_YAML_VALIDATE"):
    return ItemError(code, reason)


class Diagnostics:
    """The warnings given while reading, and the file and item they belong to."""

    def __init__(self):
        self.warnings: list[LoadWarning] = []
        self.file = ""
        self.item = ""

    def warn(self, code, msg, item=None):
        self.warnings.append(LoadWarning(self.file, item or self.item, code, msg))


# Falco's rule_loading_messages.h (0.44)
WARNING_APPEND = (
    "'append' key is deprecated. Add an 'append' entry (e.g. 'condition: append') under 'override' instead."
)
WARNING_ENABLED = (
    "The standalone 'enabled' key usage is deprecated. The correct approach requires also a 'replace' "
    "entry under the 'override' key (i.e. 'enabled: replace')."
)
ERROR_OVERRIDE_APPEND = (
    "Keys 'override' and 'append: true' cannot be used together. Add an 'append' entry (e.g. "
    "'condition: append') under 'override' instead."
)
ERROR_NO_PREVIOUS_MACRO = "Macro uses 'append' or 'override.condition: append' but no macro by that name already exists"
ERROR_NO_PREVIOUS_LIST = "List uses 'append' or 'override.items: append' but no list by that name already exists"
ERROR_NO_PREVIOUS_RULE_APPEND = "Rule uses 'append' or 'override.<key>: append' but no rule by that name already exists"
ERROR_NO_PREVIOUS_RULE_REPLACE = (
    "An 'override.<key>: replace' to a rule was requested but no rule by that name already exists"
)
