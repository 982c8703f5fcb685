"""Analysis: processors take batches of decoded frames and return typed results."""
