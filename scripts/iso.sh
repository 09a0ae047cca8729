# Sourced by mkisos.sh and mktestpacks.sh: the one way an image is written.
# write_iso STAGE VOLUME-ID OUTPUT LOG: the tree at STAGE as a reproducible
# ISO 9660 image (fixed dates and owner, Rock Ridge and Joliet), and its
# .sha256 sidecar. $SOURCE_DATE_EPOCH sets the dates; xorriso's messages go
# to LOG, and are shown only when it fails.
write_iso() {
	local stage=$1 volume=$2 output=$3 log=$4
	find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	chown -R 0:0 "$stage"
	rm -f "$output" "$output.sha256"
	xorriso -as mkisofs -quiet -R -J -joliet-long -V "$volume" \
		--modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" \
		-o "$output.tmp" "$stage" 2>"$log" || { cat "$log" >&2; exit 1; }
	mv "$output.tmp" "$output"
	(cd "$(dirname "$output")" && sha256sum "$(basename "$output")" >"$(basename "$output").sha256")
}
