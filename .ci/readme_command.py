"""Prints the N-th fenced shell block of README.md (1 = the main job, 2 = the tests), so that CI
runs exactly the commands the README gives a new user."""
import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", README.read_text(), re.M | re.S)
print(blocks[int(sys.argv[1]) - 1].strip())
