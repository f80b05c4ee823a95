"""What makes it a telephone: the hook switch, the rotary dial, touch tones, the directory, call-progress tones."""
