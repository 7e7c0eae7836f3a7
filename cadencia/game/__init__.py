"""The game's application wiring: what `play`, `spectate`, `edit` and `demo` run.

The embedded hive and the live asker (`hive_link`, `live_ask`), the spectator's feeds and
status polls (`feed_watch`, `mesh_watch`, `spectator`), the player's session and credits
(`session`, `credits`), synthetic worlds for benches (`synthetic`) and the commands' shared
window set-up (`runner`). `world.view` draws; this package connects it to the hive.
"""
