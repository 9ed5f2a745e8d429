"""Worker-side pieces: the actor loss installed in veRL's actor workers."""
