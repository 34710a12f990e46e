"""The objects vtax's HTTP servers serve (nginx and the built-in target alike): their names and sizes.

A module of its own so that the spec layer reads the sizes without importing the target's asyncio server."""

SIZES = {"1k": 1024, "16k": 16 * 1024, "64k": 64 * 1024, "256k": 256 * 1024}
