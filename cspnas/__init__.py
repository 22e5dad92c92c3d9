"""cspnas: hardware-aware NAS over the Cross-Stage-Partial design space.

    import cspnas
    model = cspnas.build_model("cspdarknet53")          # preset, ArchConfig or ARCH.json
    run = cspnas.load_run("results/my-search")            # trials and front as DataFrames
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import cspnas` stays cheap: torch/pandas load only when these are used.
    if name == "build_model":
        from cspnas.models import build_model

        return build_model
    if name == "load_run":
        from cspnas.run_format import load_run

        return load_run
    raise AttributeError(f"module 'cspnas' has no attribute {name!r}")
