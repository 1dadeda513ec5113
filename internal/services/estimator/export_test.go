package estimator

// FailBeforeManifest makes s's Saves stop after writing the chunks and before
// the manifest, with err, as a crash there would.
func FailBeforeManifest(s *CheckpointStore, err error) {
	s.beforeManifest = func() error { return err }
}
