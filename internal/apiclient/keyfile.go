package apiclient

import (
	"encoding/json"
	"fmt"
	"os"
)

// KeyFile is a JSON access-key file: the control plane's
// root-credentials.json, or one an operator writes for another key. The
// command line, the nodes and the Terraform provider read it.
type KeyFile struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	Region          string `json:"region,omitempty"`
	// Endpoint is the admin API's base URL.
	Endpoint string `json:"endpoint,omitempty"`
	// CAFile is the path of the CA certificate to trust for the API.
	CAFile string `json:"ca_file,omitempty"`
}

// LoadKeyFile reads a key file. Its errors never quote the file's
// content.
func LoadKeyFile(path string) (KeyFile, error) {
	var kf KeyFile
	b, err := os.ReadFile(path)
	if err != nil {
		return kf, fmt.Errorf("read key file: %w", err)
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return kf, fmt.Errorf("key file %s is not a JSON object of access_key_id, secret_access_key, endpoint, ca_file and region", path)
	}
	return kf, nil
}
