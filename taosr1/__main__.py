"""`python -m taosr1 ...` is the `taosr1` command (what `accelerate launch -m taosr1` starts)."""

from taosr1.cli.main import main

if __name__ == "__main__":
    main(prog_name="taosr1")
