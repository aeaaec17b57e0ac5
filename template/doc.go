// Package template makes Proxmox container templates from images and knows
// Proxmox's rules for them: the vztmpl file name ([a-zA-Z0-9_.-] and one of
// the extensions pve-storage accepts), the compression that the name implies
// (Proxmox picks tar's decompressor from the suffix alone), and the metadata
// that travels with a template.
//
// Builder is the conversion pipeline: resolve the image (registry), look the
// result up in the cache by a key covering everything that determines its
// bytes, and only on a miss fetch the layers, flatten them (imgconv) and
// write the compressed tar into the cache.
package template
