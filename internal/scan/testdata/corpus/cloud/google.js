const mapsKey = "@@R:AIza:URL:35@@";
const oauthSecret = "@@R:GOCSPX-:URL:28@@";
const projectNumber = "123456789012";
