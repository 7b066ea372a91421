"""The local stack: infrastructure parts and the runners that start them."""
