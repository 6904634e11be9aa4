"""MiniMoE: distil language models into mixture-of-minimal-experts students."""
