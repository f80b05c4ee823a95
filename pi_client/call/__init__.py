"""The call: a pure state machine and the asyncio runner that carries out its actions."""
