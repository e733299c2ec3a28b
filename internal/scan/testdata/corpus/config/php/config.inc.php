<?php
define("APP_ENV", "production");
define("SMTP_HOST", "smtp.mail.internal");
define("SMTP_PASSWORD", "@@R::A62:16@@");
define("SMTP_PORT", 587);
