"""One module per CLI command: the glue between parsed flags and the library."""


def register_more(sub) -> None:
    """Commands added by later modules (search, report, ...) register their parsers here."""
    from cspnas.commands import (dashboard_cmd, export_cmd, finalize_cmd, latency_cmd, report_cmd, search_cmd,
                                 train_cmd)

    for module in (search_cmd, finalize_cmd, report_cmd, dashboard_cmd, export_cmd, train_cmd, latency_cmd):
        module.register(sub)
