package pipeline

// SetAfterCreateSlot makes a first start call f right after it created its slot.
func SetAfterCreateSlot(c *Config, f func()) { c.afterCreateSlot = f }
