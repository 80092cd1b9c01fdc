"""Architecture guard: the import-linter contract type for "use a package through its public
module", and a report of every contract and crossing for ``aicloud arch report``.

This module imports nothing from the rest of aicloud, so it can check a broken tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.domain import helpers

CONFIG_PATH = Path(__file__).resolve().parent / "architecture.ini"


class PublicSurfaceContract(Contract):
    """Each package matched by ``packages`` may be imported from outside only through the
    package itself (its ``__init__``) or one of ``public_submodules``. Modules in
    ``allowed_importers`` (composition roots) are exempt.
    """

    type_name = "public_surface"

    packages = fields.ListField(subfield=fields.ModuleExpressionField())
    public_submodules = fields.ListField(subfield=fields.StringField(), required=False)
    allowed_importers = fields.ListField(subfield=fields.ModuleExpressionField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        public_tails = set(self.public_submodules or [])  # type: ignore[arg-type]
        exempt: set[str] = set()
        for module in helpers.module_expressions_to_modules(
            graph, self.allowed_importers or [], as_packages=True  # type: ignore[arg-type]
        ):
            exempt.add(module.name)
        links: list[dict[str, Any]] = []
        packages = {
            m.name
            for m in helpers.module_expressions_to_modules(
                graph, self.packages, as_packages=False  # type: ignore[arg-type]
            )
        }
        for package in sorted(packages):
            inside = {package, *graph.find_descendants(package)}
            for internal in sorted(inside - {package}):
                tail = internal[len(package) + 1 :].split(".")[0]
                if tail in public_tails:
                    continue
                for importer in sorted(graph.find_modules_that_directly_import(internal)):
                    if importer in inside or importer in exempt:
                        continue
                    details = graph.get_import_details(importer=importer, imported=internal)
                    links.append({
                        "importer": importer,
                        "imported": internal,
                        "line_numbers": tuple(d["line_number"] for d in details),
                    })
        return ContractCheck(kept=not links, metadata={"illegal_links": links})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for link in check.metadata["illegal_links"]:
            lines = ", ".join(map(str, link["line_numbers"]))
            output.print_error(
                f"- {link['importer']} -> {link['imported']} (l.{lines}): import the package's "
                "public module instead",
                bold=False,
            )
        output.new_line()


@dataclass
class ContractResult:
    name: str
    type: str
    kept: bool
    crossings: list[str] = field(default_factory=list)


def _is_link(x: Any) -> bool:
    return isinstance(x, dict) and {"importer", "imported", "line_numbers"} <= x.keys()


def _chains(metadata: Any) -> list[list[dict[str, Any]]]:
    """Every chain of import links in a contract check's metadata, whatever its type.

    Contract types nest their findings differently; all of them end in lists of
    {importer, imported, line_numbers} links, which is all a report needs.
    """
    found: list[list[dict[str, Any]]] = []
    if isinstance(metadata, dict) and "chain" in metadata:  # a route with alternative ends
        chain = list(metadata["chain"])
        found.append(chain)
        found.extend([first, *chain[1:]] for first in metadata.get("extra_firsts", []))
        found.extend([*chain[:-1], last] for last in metadata.get("extra_lasts", []))
    elif isinstance(metadata, list | tuple):
        if metadata and all(_is_link(x) for x in metadata):
            found.append(list(metadata))
        else:
            for item in metadata:
                found.extend(_chains(item))
    elif isinstance(metadata, dict):
        for value in metadata.values():
            found.extend(_chains(value))
    elif hasattr(metadata, "__dict__"):
        found.extend(_chains(vars(metadata)))
    return found


def _describe(chain: list[dict[str, Any]], per_link: bool) -> list[str]:
    def fmt(link: dict[str, Any]) -> str:
        nums = link.get("line_numbers") or ()
        where = f" (l.{', '.join(map(str, nums))})" if nums else ""
        return f"{link['importer']} -> {link['imported']}{where}"

    if per_link or len(chain) == 1:
        return [fmt(link) for link in chain]
    return [" -> ".join([chain[0]["importer"], *(link["imported"] for link in chain)])]


def check_architecture(config_path: Path = CONFIG_PATH) -> list[ContractResult]:
    """Run every contract in the configuration and return what each found."""
    from importlinter import configuration
    from importlinter.application import use_cases

    configuration.configure()
    options = use_cases.read_user_options(str(config_path))
    # import-linter has no public call that returns per-contract results, so this uses its
    # internals (they changed in 2.17); constraints.txt pins the version this was written for.
    # Our own contract types come from the configuration's contract_types.
    use_cases._register_built_in_contract_types()
    report = use_cases.create_report(options, cache_dir=None)
    results: list[ContractResult] = []
    for contract, check in report.get_contracts_and_checks():
        crossings: list[str] = []
        if not check.kept:
            per_link = contract.type_name == "public_surface"  # type: ignore[attr-defined]
            for chain in _chains(check.metadata):
                for line in _describe(chain, per_link):
                    if line not in crossings:
                        crossings.append(line)
        results.append(ContractResult(
            name=contract.name, type=getattr(contract, "type_name", type(contract).__name__),
            kept=check.kept, crossings=crossings,
        ))
    if report.invalid_contract_options:
        for name, exc in report.invalid_contract_options.items():
            results.append(ContractResult(name=name, type="invalid", kept=False,
                                          crossings=[f"invalid options: {exc}"]))
    return results
