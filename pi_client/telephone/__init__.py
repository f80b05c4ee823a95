"""What makes it a telephone: the hook switch, the dial (rotary and DTMF), the directory and call-progress tones."""
