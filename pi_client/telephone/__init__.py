"""What makes it a telephone: the hook switch (dial, tones and bell to come)."""
