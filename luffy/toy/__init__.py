"""A toy reasoning task a tiny model learns on the CPU in minutes: LUFFY vs GRPO vs SFT
(``exp_scripts/toy_reproduction.sh``)."""
